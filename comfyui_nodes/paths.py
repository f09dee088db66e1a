"""The ``models/atoken`` folder, registered with ComfyUI's ``folder_paths``, and what can be loaded from it:
converted diffusers folders (with config.json), official ``.pt`` checkpoints with a ``.yaml`` of the same name, and
converted Gaussian-decoder folders."""

from __future__ import annotations

import os

FOLDER = "atoken"
EMBEDDED = "(embedded default)"
EMBEDDED_FSQ = "(embedded default, FSQ tokens)"  # atoken-small-d: the Tokenize nodes work with no download


def register() -> None:
    import folder_paths

    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = ([os.path.join(folder_paths.models_dir, FOLDER)], {".pt", ".yaml"})


def roots() -> list[str]:
    import folder_paths

    register()
    return list(folder_paths.folder_names_and_paths[FOLDER][0])


def list_models(kind: str = "autoencoder") -> list[str]:
    """Names (relative to models/atoken) of loadable models of ``kind`` ("autoencoder" or "gaussian_decoder")."""
    names = []
    for root in roots():
        if not os.path.isdir(root):
            continue
        for entry in sorted(os.listdir(root)):
            path = os.path.join(root, entry)
            config = os.path.join(path, "config.json")
            if os.path.isfile(config):
                is_gs = '"ATokenGaussianDecoder"' in open(config).read()
                if is_gs == (kind == "gaussian_decoder"):
                    names.append(entry)
            elif kind == "autoencoder" and entry.endswith(".pt") and os.path.isfile(path[:-3] + ".yaml"):
                names.append(entry)
    if kind == "autoencoder":
        names[:0] = [label for label in (EMBEDDED, EMBEDDED_FSQ) if _embedded(label) is not None]
    return names


def _embedded(label: str = EMBEDDED):
    from atoken_diffusers.weights import default_model_dir

    return default_model_dir(discrete=label == EMBEDDED_FSQ)


def resolve(name: str) -> str:
    """Full path of a model listed by :func:`list_models` (or an absolute path); a clear error when missing."""
    if name in (EMBEDDED, EMBEDDED_FSQ) and _embedded(name) is not None:
        return str(_embedded(name))
    if os.path.isabs(name) and os.path.exists(name):
        return name
    for root in roots():
        path = os.path.join(root, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"AToken model {name!r} not found in {roots()}; put a converted folder (atoken convert) "
                            "or an official .pt with its .yaml there.")
