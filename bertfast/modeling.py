"""The BERT encoder's former module: it lives in bertfast.models.bert now; these names keep old import lines
working."""
from bertfast.models.bert import (BertAttention, BertEmbeddings, BertEncoder, BertIntermediate, BertLayer,  # noqa: F401
                                  BertModel, BertPooler, BertResidualOutput, BertSelfAttention)
