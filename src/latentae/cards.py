"""Model cards: the ``README.md`` of every saved model directory, saying how it was made.

A card is a YAML front-matter block between two ``---`` lines at the top of
``README.md`` (the Hugging Face model-card layout), holding the machine-readable fields,
followed by Markdown written from those fields. The front matter is the source of truth:
each latentae write renders the prose again from it (edit the fields, not the tables;
notes added below the generated text are kept).
A README is a latentae card only when its front matter carries the marker
``latentae_card: 1`` (:data:`MARKER`; cards written before it: ``latentae_version``);
any other README, with front matter or not (every Hugging Face model repository has
some), is the user's and is never rewritten.

Fields (a field that is not known is left out)::

  library_name, tags, format      latentae | diffusers (| onnx ...): who loads the folder
  kind                            autoencoder | diffusion (a card without it: autoencoder)
  family, preset, parameters {encoder, decoder, total}, spatial_compression_ratio,
  latent_channels, scaling_factor, shift_factor           an autoencoder itself
  family, preset, parameters {total}, latent_channels, latent_size, patch_size, tokens,
  num_classes, learn_sigma                                a diffusion model itself
  base_model                      the model directory a training run started from
  recipe, phases, steps, nimg, data, validation           the training run (train/card.py)
  objective, autoencoder, resolution, latent_norm, batch_size, sampling
                                  a diffusion run besides (diffusion/card.py)
  evaluation                      [{data, protocol, metrics, command, latentae_version}]
  latentae_version, command       who wrote this folder
  history                         [{command, latentae_version}]: earlier writers (convert)
  (any other field, e.g. a licence, is kept as it is)

``data`` is a fingerprint (:func:`data_fingerprint`): the count and the sha256 of the
sorted names of what was read. This module is in the bottom layer, beside
``serialization``: it knows a model only by its attributes (``kind``, ``family``,
``preset``, ``parameter_counts()``, ...), so ``Autoencoder.save_pretrained`` and
``DiffusionModel.save_pretrained`` write a card too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from latentae.files import atomic_write_text
from latentae.version import __version__

__all__ = ["CARD_NAME", "FINGERPRINT_RULE", "MARKER", "card_fields", "command_line",
           "data_fingerprint", "files_fingerprint", "flatten", "model_facts", "read_card",
           "recorded_command",
           "render_card", "unrepeated", "with_evaluation", "write_card"]

CARD_NAME = "README.md"
MARKER = "latentae_card"  # front-matter key that makes a README a latentae card
FINGERPRINT_RULE = "sha256 of the sorted names, each followed by a newline (UTF-8)"
# Fields a writer sets afresh (never carried from the card of the folder it came from).
_WRITER_FIELDS = ("library_name", "format", "kind", "family", "preset", "parameters",
                  "spatial_compression_ratio", "latent_channels", "latent_size",
                  "patch_size", "tokens", "num_classes", "learn_sigma", "scaling_factor",
                  "shift_factor", "latentae_version", "command")
_ORDER = (MARKER, "library_name", "tags", "format", "kind", "family", "preset",
          "parameters",
          "spatial_compression_ratio", "latent_channels", "latent_size", "patch_size",
          "tokens", "num_classes", "learn_sigma", "scaling_factor", "shift_factor",
          "base_model", "objective", "autoencoder", "resolution", "latent_norm", "recipe",
          "recipe_overrides", "phases", "steps", "nimg", "batch_size", "data", "validation",
          "sampling", "evaluation", "latentae_version", "command", "history")
_DIFFUSERS_CLASS = {"sdvae": "AutoencoderKL", "dcae": "AutoencoderDC"}
_command: list[list[str]] = []  # the latentae command line this process runs (a stack)


# --- where a checkpoint comes from ----------------------------------------------------
@contextlib.contextmanager
def recorded_command(argv: list[str]) -> Iterator[None]:
    """While inside, :func:`command_line` is ``latentae ARGV`` (``latentae.cli.main``
    records the command it runs, so cards name it even when ``main`` is called in-process)."""
    _command.append([str(a) for a in argv])
    try:
        yield
    finally:
        _command.pop()


def command_line() -> str:
    """The command that is writing: the recorded ``latentae ...`` line, else the
    process's own ``sys.argv`` (a Python script)."""
    if _command:
        return shlex.join(["latentae", *_command[-1]])
    argv = list(sys.argv)
    if not argv or not argv[0]:
        return "python (interactive)"
    if argv[0] == "-c":
        return "python -c ..."
    return shlex.join(["python", *argv] if argv[0].endswith(".py") else argv)


def data_fingerprint(spec: str | os.PathLike, names: Iterable[str], kind: str) -> dict[str, Any]:
    """``{spec, kind, count, sha256}`` of the ``names`` read from ``spec`` (the one rule,
    :data:`FINGERPRINT_RULE`): the same names give the same hash whatever their order."""
    names = sorted(names)
    text = "".join(n + "\n" for n in names)  # undecodable file names as their bytes
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
    return {"spec": str(spec), "kind": kind, "count": len(names), "sha256": digest}


def files_fingerprint(root: str | os.PathLike, files: Iterable[str | os.PathLike],
                      kind: str = "image files (paths relative to spec)") -> dict[str, Any]:
    """:func:`data_fingerprint` of ``files`` by their POSIX paths relative to ``root``."""
    root = Path(root)
    return data_fingerprint(root, (Path(f).relative_to(root).as_posix() for f in files), kind)


# --- the fields -----------------------------------------------------------------------
def card_fields(model: Any, fmt: str = "latentae", keep: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """The card of ``model`` saved in format ``fmt`` by :func:`command_line`: the model's
    own fields, then the other fields of ``keep`` (the card of the folder it was
    converted from, or a training run's fields). ``keep``'s own writer moves to
    ``history``; ``keep``'s tags are kept beside the new ones."""
    keep = dict(keep or {})
    kind = getattr(model, "kind", "autoencoder")
    tags = ["latentae", kind, model.family]
    if fmt != "latentae":
        tags.append(fmt)
    tags += [t for t in keep.pop("tags", None) or [] if isinstance(t, str) and t not in tags]
    history = list(keep.pop("history", None) or [])
    if keep.get("command"):
        history.append({k: keep[k] for k in ("command", "latentae_version")
                        if keep.get(k) is not None})
    fields = {"library_name": fmt, "tags": tags, "format": fmt, "kind": kind,
              "family": model.family, "preset": model.preset,
              "parameters": model.parameter_counts(), **model_facts(model),
              "latentae_version": __version__, "command": command_line()}
    fields.update({k: v for k, v in keep.items() if k not in _WRITER_FIELDS})
    if history:
        fields["history"] = history
    return _ordered(fields)


def model_facts(model: Any) -> dict[str, Any]:
    """The card fields of ``model``'s shape besides family, preset and parameters: an
    autoencoder's compression and latent factors, a diffusion model's latent grid,
    patches, tokens and classes (``kind == "diffusion"``)."""
    if getattr(model, "kind", "autoencoder") == "diffusion":
        c = model.config
        return {"latent_channels": int(c.in_channels), "latent_size": int(c.input_size),
                "patch_size": int(c.patch_size), "tokens": int(model.tokens),
                "num_classes": int(c.num_classes), "learn_sigma": bool(c.learn_sigma)}
    return {"spatial_compression_ratio": int(model.spatial_compression_ratio),
            "latent_channels": int(model.latent_channels),
            "scaling_factor": float(model.scaling_factor),
            "shift_factor": float(model.shift_factor or 0.0)}


def unrepeated(card: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    """``card`` without what ``known`` (the loaded model's facts, by card field name)
    already states with the same value, and without the hub's copies of other fields
    (``library_name`` = ``format``; the tags a writer derives): what ``latentae info``
    prints. A field that disagrees with ``known`` is kept, so the disagreement shows."""
    out = {k: v for k, v in card.items() if k != MARKER and (k not in known or known[k] != v)}
    if out.get("library_name") == out.get("format"):
        out.pop("library_name", None)
    derived = {"latentae", card.get("kind", "autoencoder"), card.get("family"), card.get("format")}
    tags = out.pop("tags", None)
    tags = [t for t in tags if t not in derived] if isinstance(tags, list) else tags
    return _ordered({**out, "tags": tags or None})


def with_evaluation(fields: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with ``entry`` ({data, protocol, metrics, ...}) in ``evaluation``,
    replacing an earlier entry on the same images (data sha256) under the same protocol."""
    def same(e: Any) -> bool:
        return isinstance(e, dict) and e.get("protocol") == entry.get("protocol") and \
            (e.get("data") or {}).get("sha256") == (entry.get("data") or {}).get("sha256")
    old = fields.get("evaluation")
    kept = [e for e in old if not same(e)] if isinstance(old, list) else []
    return _ordered({**fields, "evaluation": [*kept, entry]})


def _ordered(fields: dict[str, Any]) -> dict[str, Any]:
    known = {k: fields[k] for k in _ORDER if fields.get(k) is not None}
    return known | {k: v for k, v in fields.items() if k not in known and v is not None}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested fields as ``{"a.b": v, "a[0].c": v}`` scalars (what ``latentae info`` prints)."""
    if isinstance(value, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items()]
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
    else:
        return {prefix: ", ".join(map(str, value)) if isinstance(value, list) else value}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(flatten(v, k))
    return out


# --- the file ---------------------------------------------------------------------------
def read_card(directory: str | os.PathLike) -> tuple[dict[str, Any] | None, str]:
    """``(fields, "")`` of ``directory/README.md``, or ``(None, why there is no card)``:
    a missing file, no front matter, unreadable YAML. Never raises for a bad card."""
    path = Path(directory) / CARD_NAME
    if not path.is_file():
        return None, f"no {CARD_NAME}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{CARD_NAME} is unreadable ({e})"
    head, sep, _ = text[4:].partition("\n---\n") if text.startswith("---\n") else ("", "", "")
    if not sep:
        return None, f"{CARD_NAME} has no front matter (no '---' block at the top)"
    try:
        fields = yaml.safe_load(head)
    except yaml.YAMLError as e:
        return None, f"{CARD_NAME}'s front matter is not valid YAML ({' '.join(str(e).split())})"
    if not isinstance(fields, dict):
        return None, f"{CARD_NAME}'s front matter is not a mapping of fields"
    if MARKER not in fields and "latentae_version" not in fields:
        return None, (f"{CARD_NAME} was not written by latentae (its front matter has no "
                      f"{MARKER!r} field)")
    return fields, ""


def write_card(directory: str | os.PathLike, fields: dict[str, Any]) -> Path:
    """Write ``fields`` as ``directory/README.md`` (atomically), keeping the notes a user
    added below the generated text of the card there; returns its path."""
    path = Path(directory) / CARD_NAME
    atomic_write_text(path, render_card(fields) + _user_notes(path))
    return path


# The generated text's last line: what follows it in a card is the user's.
_END = f"\nData fingerprints: the count and the {FINGERPRINT_RULE}.\n"


def _user_notes(path: Path) -> str:
    """The notes below the generated text of the latentae card at ``path`` (sweep MC03b:
    ``latent-stats --write`` dropped them). The generated text itself is rendered again
    from the front matter: edits inside it are not kept, and a note says so."""
    fields, _ = read_card(path.parent)
    if fields is None:
        return ""
    text = path.read_text(encoding="utf-8")
    generated, end, notes = text.partition(_END)
    if generated + end != render_card(fields):
        print(f"note: {path}: its generated text was edited; it is rendered again from the "
              "front matter (edit the fields; notes below its last line are kept)",
              file=sys.stderr)
    return notes


def render_card(fields: dict[str, Any]) -> str:
    """The card's text: front matter, then a summary, training, evaluation, usage and
    provenance in Markdown."""
    plain = json.loads(json.dumps({MARKER: 1, **fields}, default=str))  # tuples -> lists
    front = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, width=4096)
    parts = [_summary(plain), _training(plain), _evaluation(plain), _usage(plain),
             _provenance(plain)]
    return "---\n" + front + "---\n\n" + "\n\n".join(p.strip() for p in parts if p) + "\n"


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(rows: Iterable[tuple[Any, ...]], head: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _summary(f: dict[str, Any]) -> str:
    if f.get("kind") == "diffusion":
        return _diffusion_summary(f)
    name = f.get("preset") or f.get("family", "model")
    p = f.get("parameters") or {}
    rows = [("family", f.get("family")), ("preset", f.get("preset") or "none (custom config)"),
            ("format", f.get("format")),
            ("parameters", f"encoder {p.get('encoder', 0):,}, decoder {p.get('decoder', 0):,}, "
                           f"total {p.get('total', 0):,}"),
            ("compression", f"f{f.get('spatial_compression_ratio')}, "
                            f"{f.get('latent_channels')} latent channels"),
            ("scaling_factor / shift_factor", f"{f.get('scaling_factor')} / "
                                              f"{f.get('shift_factor')}")]
    return (f"# {name}\n\nAn image autoencoder for latent diffusion, written by latentae: "
            f"images (3, H, W) in [-1, 1] -> latents ({f.get('latent_channels')}, "
            f"H/{f.get('spatial_compression_ratio')}, W/{f.get('spatial_compression_ratio')})."
            "\n\n" + _table(rows, ("", "")))


def _diffusion_summary(f: dict[str, Any]) -> str:
    c, n, k = f.get("latent_channels"), f.get("latent_size"), f.get("num_classes")
    rows = [("family", f.get("family")), ("preset", f.get("preset") or "none (custom config)"),
            ("format", f.get("format")),
            ("parameters", f"{(f.get('parameters') or {}).get('total', 0):,}"),
            ("latents", f"({c}, {n}, {n}), patch {f.get('patch_size')}, "
                        f"{f.get('tokens')} tokens"),
            ("classes", f"{k} (+ the null class)" if k else "unconditional"),
            ("learned sigma", f.get("learn_sigma"))]
    return (f"# {f.get('preset') or f.get('family', 'model')}\n\nA latent diffusion backbone "
            f"written by latentae: noisy latents ({c}, {n}, {n}), a timestep and a class -> "
            "the prediction of its objective.\n\n" + _table(rows, ("", "")))


def _diffusion_run(f: dict[str, Any]) -> str:
    """The sentences of a diffusion run: objective, autoencoder, images, sampling."""
    if not f.get("objective"):
        return ""
    ae = f.get("autoencoder") if isinstance(f.get("autoencoder"), dict) else {}
    norm = f.get("latent_norm") if isinstance(f.get("latent_norm"), dict) else {}
    s = f.get("sampling") if isinstance(f.get("sampling"), dict) else {}
    return (f" Objective `{f['objective']}` at global batch {f.get('batch_size')}, on "
            f"{f.get('resolution')}² images through the autoencoder `{ae.get('model')}` "
            f"({ae.get('preset') or ae.get('family')}, scaling_factor "
            f"{ae.get('scaling_factor')}, shift_factor {ae.get('shift_factor')}); latent "
            f"normalisation `{norm.get('kind')}`. Sampling default: `{s.get('sampler')}`, "
            f"{s.get('steps')} steps, guidance {s.get('guidance')}.")


def _data_line(d: Any) -> str:
    if not isinstance(d, dict):
        return str(d)
    return f"`{d.get('spec')}`: {d.get('count')} {d.get('kind')}, sha256 `{d.get('sha256')}`"


def _training(f: dict[str, Any]) -> str:
    if not f.get("recipe"):
        return ""
    out = [f"## Training\n\nRecipe `{f['recipe']}`: {f.get('steps')} optimizer steps, "
           f"{f.get('nimg')} images.{_diffusion_run(f)}"]
    if f.get("base_model"):
        out.append(f"Started from `{f['base_model']}`.")
    if f.get("data"):
        out.append(f"Data {_data_line(f['data'])}.")
    text = " ".join(out) + "\n\n"
    phases = [p for p in f.get("phases") or [] if isinstance(p, dict)]
    if phases:
        text += _table([(p.get("name"), p.get("steps"), p.get("batch_size"),
                         p.get("resolution"), ", ".join(p.get("train_groups") or []))
                        for p in phases], ("phase", "steps", "batch", "resolution", "trains"))
    val = f.get("validation")
    if isinstance(val, dict) and isinstance(val.get("metrics"), dict):
        text += (f"\nFinal validation (EMA model, image {val.get('nimg')}, "
                 f"{_data_line(val.get('data'))}): " + ", ".join(
                     f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in val["metrics"].items()) + "\n")
    return text


def _evaluation(f: dict[str, Any]) -> str:
    entries = [e for e in f.get("evaluation") or [] if isinstance(e, dict)]
    if not entries:
        return ""
    text = "## Evaluation\n\n"
    for e in entries:
        metrics = e.get("metrics") if isinstance(e.get("metrics"), dict) else {}
        text += f"Data {_data_line(e.get('data'))}.\n\n"
        text += _table([(k, f"{v:.5g}" if isinstance(v, float) else v)
                        for k, v in metrics.items()], ("metric", "value"))
        text += f"\nProtocol: {e.get('protocol')}\n\n`{e.get('command')}`\n\n"
    return text


def _usage(f: dict[str, Any]) -> str:
    if f.get("kind") == "diffusion":
        text = ("## Use\n\n```python\nfrom latentae.diffusion import load\n\n"
                "model = load(\"path/to/this/folder\")\n```\n")
        if f.get("objective"):  # a run's export: diffusion_run.json is beside the weights
            text += ("\nwith its autoencoder and sampler (`latentae diffusion sample "
                     "path/to/this/folder --n 64 --out samples`):\n\n```python\n"
                     "from latentae.diffusion.pipeline import load_run\n\n"
                     "pipe = load_run(\"path/to/this/folder\")\n```\n")
        return text
    text = ("## Use\n\n```python\nimport latentae\n\n"
            "model = latentae.load(\"path/to/this/folder\")\n```\n")
    cls = _DIFFUSERS_CLASS.get(f.get("family"))
    if f.get("format") == "diffusers" and cls:
        text += (f"\nor with diffusers:\n\n```python\nfrom diffusers import {cls}\n\n"
                 f"vae = {cls}.from_pretrained(\"path/to/this/folder\")\n```\n")
    return text


def _provenance(f: dict[str, Any]) -> str:
    rows = [(h.get("latentae_version"), f"`{h.get('command')}`")
            for h in f.get("history") or [] if isinstance(h, dict)]
    rows.append((f.get("latentae_version"), f"`{f.get('command')}`"))
    return ("## Provenance\n\nWritten by (oldest first):\n\n"
            + _table(rows, ("latentae", "command"))
            + f"\nData fingerprints: the count and the {FINGERPRINT_RULE}.\n")
