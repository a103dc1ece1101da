"""--device strings: a clear error (exit code 2, nothing written) for a GPU that is not
there, instead of a traceback from inside torch."""

import pytest
import torch
from PIL import Image

from latentae.cli import main
from latentae.devices import resolve_device


def test_resolve_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "meta", "cuda:x"):
        with pytest.raises(ValueError, match="device"):
            resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("argv", [
    ["bench", "sdvae-tiny", "--device", "cuda"],
    ["encode", "sdvae-tiny", "--random-init", "IMAGES", "OUT", "--device", "cuda:1"],
    ["train", "--model", "litevae-tiny", "--recipe", "litevae", "--data", "IMAGES",
     "--out", "OUT", "--device", "cuda"],
])
def test_cli_without_cuda_says_so(argv, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    argv = [str(tmp_path / "images") if a == "IMAGES" else str(tmp_path / "out") if a == "OUT"
            else a for a in argv]
    assert main(argv) == 2
    assert "use --device cpu" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing half-written
