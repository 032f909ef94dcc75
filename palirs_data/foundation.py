"""Foundation models: a pretrained MACE to fine-tune from, named or as a file.

``committee.training.foundation_model`` (and the dipole model's) is a local file under
``data/user/models/`` or a name mace-torch knows: MACE-OFF23 (``small_off``, ``medium_off``,
``large_off``; organic molecules, Academic Software Licence) or a MACE-MP model
(``medium-mpa-0``, ``small`` ...; materials, MIT or ASL as mace-torch states). A name is
fetched once into mace-torch's cache and taken from there after; an offline machine without
it gets one line that says where to put the file.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from palirs_data.config import MaceTrainingConfig
from palirs_data.errors import PalirsInputError

log = logging.getLogger(__name__)


def foundation_url(name: str) -> str | None:
    """The download address of a foundation model mace-torch knows by ``name``: MACE-OFF23
    (``small_off``, ``medium_off``, ``large_off``; organic molecules, Academic Software
    Licence) or a MACE-MP model (``medium-mpa-0``, ``small`` ...; materials, MIT or ASL as
    mace-torch states). None: not a name it knows."""
    from mace.calculators.foundations_models import mace_mp_urls, mace_off_urls

    if name.endswith("_off") and name[:-4] in mace_off_urls:
        return mace_off_urls[name[:-4]]
    return mace_mp_urls.get(name)


def foundation_file(value: str, *, key: str, timeout_s: float = 60.0) -> Path:
    """The local file of a ``foundation_model`` setting: the file itself, or a model named as
    mace-torch names it, fetched once into mace-torch's cache (``~/.cache/mace``, or
    ``$XDG_CACHE_HOME/mace``) and taken from there after; a name that is neither cached nor
    reachable (an offline machine) is refused in one line that says where to put the file."""
    import urllib.request

    from mace.tools.utils import get_cache_dir

    from palirs_data.config import is_model_file

    path = Path(value)
    if is_model_file(value) or path.is_file():
        if not path.is_file():
            raise PalirsInputError(f"{key}: {value}: no such file")
        return path.resolve()
    url = foundation_url(value)
    if url is None:
        raise PalirsInputError(f"{key}: '{value}' is neither a file nor a model mace-torch "
                               "knows by name (e.g. small_off, medium_off, medium-mpa-0)")
    cached = Path(get_cache_dir()) / Path(url).name
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        part = cached.with_name(f"{cached.name}.{os.getpid()}.part")
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response, \
                    open(part, "wb") as out:
                shutil.copyfileobj(response, out)
            os.replace(part, cached)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise PalirsInputError(
                f"{key}: '{value}' is not in {cached.parent} and cannot be fetched "
                f"({type(exc).__name__}: {str(exc)[:80]}); download {url} into "
                f"{cached.parent}/ on a machine with internet, or give a local file") from None
        log.info("%s: fetched %s into %s", key, value, cached)
    return cached


def with_foundation_file(training: MaceTrainingConfig, key: str) -> MaceTrainingConfig:
    """``training`` with its foundation model (if any) as a local file (:func:`foundation_file`),
    resolved once in the submitting process so that the members never race to fetch it."""
    if training.foundation_model is None:
        return training
    path = foundation_file(training.foundation_model, key=key)
    return training.model_copy(update={"foundation_model": str(path)})
