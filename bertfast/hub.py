"""Name resolution: a local checkpoint directory, or a hub id through ``huggingface_hub``.

Hub ids are looked up in the HF cache first, then downloaded unless ``local_files_only`` or
``HF_HUB_OFFLINE=1``. Before a download, one request with a short timeout checks that the hub answers: when it
does not, the offline error comes at once instead of after huggingface_hub's retries (about 25 s). A name
that looks like a path but is not a directory is never sent to the hub. A local directory whose save a kill
interrupted is read in its whole version (``bertfast.atomic.current_version``). Every failure is a
``FileNotFoundError`` that says what was looked for and where.
"""
from __future__ import annotations

import json
import os
from typing import Any

import huggingface_hub
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError

from bertfast.atomic import current_version


HUB_PROBE_TIMEOUT = 3.0  # seconds the reachability check waits for the hub to answer


def hub_reachable() -> bool:
    """Whether the hub endpoint answers one HEAD request within ``HUB_PROBE_TIMEOUT`` (through huggingface_hub's
    own HTTP session, so its proxies and endpoint settings apply)."""
    try:
        huggingface_hub.get_session().head(hub_constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT)
    except Exception:  # the session's transport errors (their classes depend on huggingface_hub's HTTP client)
        return False
    return True


def _looks_like_path(name: str) -> bool:
    """Hub ids are "name" or "org/name"; anything else that does not exist is a mistyped local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def resolve_file(name_or_path: str | os.PathLike, filename: str, required: bool = True,
                 local_files_only: bool = False) -> str | None:
    """Path of ``filename`` for a local directory or a hub id; None if absent and not ``required``.

    Hub ids are looked up in the HF cache first, then (unless ``local_files_only`` or
    ``HF_HUB_OFFLINE=1``) downloaded.
    """
    name = os.fspath(name_or_path)
    directory = current_version(name)  # a folder a kill left mid-swap: its whole version
    if os.path.isdir(directory):
        path = os.path.join(directory, filename)
        if os.path.isfile(path):
            return path
        if required:
            raise FileNotFoundError(f"{filename} not found in {name} (it holds: {sorted(os.listdir(name))})")
        return None
    if os.path.exists(name) or _looks_like_path(name):
        raise FileNotFoundError(f"{name!r} is not a directory: pass an existing local checkpoint directory or a "
                                f"hub id like 'bert-base-uncased'")
    try:
        try:
            return huggingface_hub.hf_hub_download(name, filename, local_files_only=True)
        except LocalEntryNotFoundError:
            if local_files_only or hub_constants.HF_HUB_OFFLINE or not hub_reachable():
                raise
            return huggingface_hub.hf_hub_download(name, filename)
    except LocalEntryNotFoundError as e:
        if not required:
            return None
        raise FileNotFoundError(
            f"Could not find {filename} for {name!r}: it is not a local directory, not in the HuggingFace cache, "
            f"and the hub could not be reached (offline, HF_HUB_OFFLINE=1, or no network). Download it elsewhere "
            f"(e.g. `hf download {name}`) or pass a local directory holding config.json and "
            f"model.safetensors: from_pretrained('/path/to/{name.split('/')[-1]}')"
        ) from e
    except EntryNotFoundError:
        if required:
            raise FileNotFoundError(f"the hub repository {name!r} has no file {filename}") from None
        return None
    except HFValidationError as e:
        raise FileNotFoundError(f"{name!r} is neither a local directory nor a valid hub id ({e})") from None
    except OSError as e:  # repository not found, gated, HTTP errors
        raise FileNotFoundError(f"could not fetch {filename} for {name!r} from the hub: {e}") from e


def read_json_object(path: str | os.PathLike, fix: str, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The JSON object in the file ``path``; a file that is not UTF-8 JSON, or holds no object, raises ``error``
    naming the file and ``fix`` (what the user should do)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path} is not valid UTF-8 JSON ({err}); {fix}") from err
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object (option name -> value), got a {type(data).__name__}")
    return data
