"""``fundus-vlp serve`` listens on this machine only by default and refuses bad arguments with a message."""
from __future__ import annotations

from fundus_vlp.cli.main import build_parser, main


def test_serve_defaults_to_localhost_7860():
    args = build_parser().parse_args(["serve", "--model", "m"])
    assert (args.host, args.port, args.max_upload_mb, args.max_images) == ("127.0.0.1", 7860, 20.0, 16)


def test_serve_refuses_a_folder_that_is_not_a_model(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path)]) == 1
    assert f"{tmp_path}: not a model folder (no config.json)" in capsys.readouterr().err


def test_serve_refuses_bad_limits(tmp_path, capsys):
    model_dir = tmp_path  # the arguments are checked before the model is read
    (model_dir / "config.json").write_text("{}")
    assert main(["serve", "--model", str(model_dir), "--port", "70000"]) == 1
    assert "--port 70000" in capsys.readouterr().err
    assert main(["serve", "--model", str(model_dir), "--max-upload-mb", "0"]) == 1
    assert "must be positive" in capsys.readouterr().err
