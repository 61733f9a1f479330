from click.testing import CliRunner

from unigs_deploy import demo, io


def test_codec_demo_writes_pngs_and_reports(tmp_path):
    res = CliRunner().invoke(demo.main, ["--codec", "--out", str(tmp_path), "--entities", "6", "--size", "128"])
    assert res.exit_code == 0, res.output
    for name in ("masks.png", "colormap.png", "colormap_noisy.png", "decoded.png", "labels.png", "masks.json"):
        assert (tmp_path / name).is_file()
        assert f"wrote {tmp_path / name}" in res.output
    assert "PQ" in res.output
    assert io.read_labels(tmp_path / "labels.png").max() >= 1
