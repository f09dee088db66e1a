"""The ``models/atoken`` folder, registered with ComfyUI's ``folder_paths``, and what can be loaded from it:
converted diffusers folders (with config.json), official ``.pt`` checkpoints with a ``.yaml`` of the same name, and
converted Gaussian-decoder folders; plus the models the package ships ("(embedded default)" entries, first in each
list), so the example workflows run with no download."""

from __future__ import annotations

import os

FOLDER = "atoken"
EMBEDDED = "(embedded default)"
EMBEDDED_FSQ = "(embedded default, FSQ tokens)"  # atoken-small-d: the Tokenize nodes work with no download
AUTOENCODER, GAUSSIAN_DECODER = "autoencoder", "gaussian_decoder"


def register() -> None:
    import folder_paths

    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = ([os.path.join(folder_paths.models_dir, FOLDER)], {".pt", ".yaml"})


def roots() -> list[str]:
    import folder_paths

    register()
    return list(folder_paths.folder_names_and_paths[FOLDER][0])


def list_models(kind: str = AUTOENCODER) -> list[str]:
    """Names (relative to models/atoken) of loadable models of ``kind`` (AUTOENCODER or GAUSSIAN_DECODER), the
    shipped ones first."""
    names = []
    for root in roots():
        if not os.path.isdir(root):
            continue
        for entry in sorted(os.listdir(root)):
            path = os.path.join(root, entry)
            config = os.path.join(path, "config.json")
            if os.path.isfile(config):
                with open(config) as f:
                    is_gs = '"ATokenGaussianDecoder"' in f.read()
                if is_gs == (kind == GAUSSIAN_DECODER):
                    names.append(entry)
            elif kind == AUTOENCODER and entry.endswith(".pt") and os.path.isfile(path[:-3] + ".yaml"):
                names.append(entry)
    labels = (EMBEDDED, EMBEDDED_FSQ) if kind == AUTOENCODER else (EMBEDDED,)
    names[:0] = [label for label in labels if _embedded(label, kind) is not None]
    return names


def _embedded(label: str, kind: str = AUTOENCODER):
    """The shipped folder behind an "(embedded default...)" label, or None."""
    from atoken_diffusers.weights import default_gs_decoder_dir, default_model_dir

    if label not in (EMBEDDED, EMBEDDED_FSQ):
        return None
    if kind == GAUSSIAN_DECODER:
        return default_gs_decoder_dir() if label == EMBEDDED else None
    return default_model_dir(discrete=label == EMBEDDED_FSQ)


def inside(folder: str, name: str, what: str) -> str:
    """``folder``/``name`` for a relative ``name`` that stays inside ``folder``; an absolute name or one whose ``..``
    steps lead out is refused. Checked on the text, as ComfyUI's own ``folder_paths.get_full_path`` does, so that a
    symlink the admin put inside the folder keeps working."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} is empty; choose or type a name inside {folder}.")
    normal = os.path.normpath(name)
    if os.path.isabs(name) or normal == ".." or normal.startswith(".." + os.sep):
        raise ValueError(f"{what} {name!r} leads outside {folder}; use a name inside that folder (no absolute path, "
                         "no '..').")
    return os.path.join(folder, normal)


def resolve(name: str, kind: str = AUTOENCODER) -> str:
    """Full path of a model of ``kind`` listed by :func:`list_models`: an "(embedded default...)" label or a name
    inside models/atoken (nothing outside it is loaded); a clear error when missing."""
    if isinstance(name, str) and _embedded(name, kind) is not None:
        return str(_embedded(name, kind))
    for root in roots():
        path = inside(root, name, "model")
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"AToken model {name!r} not found in {roots()}; put a converted folder (atoken convert) "
                            "or an official .pt with its .yaml there.")


def input_file(name: str, suffixes: tuple[str, ...], what: str) -> str:
    """A file named ``name`` inside ComfyUI's input folder, of one of ``suffixes``."""
    import folder_paths

    folder = folder_paths.get_input_directory()
    path = inside(folder, name, what)
    if not name.lower().endswith(suffixes):
        raise ValueError(f"{what} {name!r} is not one of {', '.join(suffixes)}; convert it or pick another file.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {name!r} not found in ComfyUI's input folder ({folder}); upload it there.")
    return path


def output_base(prefix: str) -> tuple[str, str]:
    """(output folder, path stem) for a ``filename_prefix`` such as "atoken/splat" inside ComfyUI's output folder."""
    import folder_paths

    out_dir = folder_paths.get_output_directory()
    base = inside(out_dir, prefix, "filename_prefix")
    if not os.path.basename(base) or prefix.endswith(("/", os.sep)):
        raise ValueError(f"filename_prefix {prefix!r} has no file name; end it with one, e.g. 'atoken/splat'.")
    return out_dir, base
