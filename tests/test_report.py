"""``ddbench report`` in a real headless browser: the page loads without console errors and shows every table,
every plot and every image grid (skipped when Debian's chromium is not installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from ddbench.cli import main
from ddbench.distilled import DistilledSet
from ddbench.store import Store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _store(tmp_path: Path) -> Path:
    path = tmp_path / "results.sqlite"
    s = Store(path)
    g = torch.Generator().manual_seed(0)
    for method, base in (("random", 20.0), ("dwa", 30.0)):
        for ipc in (1, 10):
            run_id = f"{method}-{ipc}"
            art = DistilledSet(torch.randint(0, 256, (10 * ipc, 3, 8, 8), generator=g, dtype=torch.uint8),
                               torch.arange(10).repeat_interleave(ipc)).save(tmp_path / "runs" / run_id)  # fmt: skip
            s.add_run(run_id=run_id, method=method, dataset="cifar10", class_hash="c" * 16, ipc=ipc,
                      artifact_path=str(art), wall_time_s=12.0, peak_mem_mb=300.0)  # fmt: skip
            s.add_metric(run_id, "storage_images_bytes", 10 * ipc * 3 * 8 * 8)
            for arch in ("resnet18", "convnet"):
                for seed in range(2):
                    s.add_evaluation(run_id=run_id, arch=arch, protocol="dwa-cifar@cpu", protocol_version=1,
                                     eval_seed=seed, top1=base + ipc + seed, wall_time_s=5.0)  # fmt: skip
    extra = {"per_seed": {"0": 0.21, "1": 0.23}}
    s.add_metric("dwa-10", "score:lrs:resnet18:dwa-cifar@cpu", 0.22, json.dumps(extra))
    return path


def _browse(page: Path) -> tuple[str, str]:
    """(DOM after load, stderr) of ``page`` in headless chromium; page console messages are ``:CONSOLE`` lines."""
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return out.stdout, out.stderr


def test_report_files_and_html_without_a_browser(tmp_path: Path, capsys) -> None:
    store = _store(tmp_path)
    site = tmp_path / "site"
    assert main(["-q", "report", "--out", str(site), "--store", str(store)]) == 0
    html = (site / "cifar10.html").read_text()
    for heading in ("Top-1 accuracy, every protocol side by side", "Paper vs ours", "LRS", "Storage", "Cost", "Plots",
                    "Distilled images"):  # fmt: skip
        assert f"<h2>{heading}</h2>" in html
    pngs = sorted(p.name for p in (site / "cifar10").glob("*.png"))
    assert pngs == [
        "acc-vs-ipc-dwa-cifar_at_cpu.png",
        "grid-dwa-1.png",
        "grid-dwa-10.png",
        "grid-random-1.png",
        "grid-random-10.png",
        "heatmap-dwa-cifar_at_cpu-ipc1.png",
        "heatmap-dwa-cifar_at_cpu-ipc10.png",
    ]
    assert all(f'src="cifar10/{p}"' in html for p in pngs)
    assert "32.6±0.4" in html  # DWA's published CIFAR-10 ipc10 ResNet-18 number, beside our dwa-cifar@cpu column
    assert 'href="cifar10.html"' in (site / "index.html").read_text()
    assert main(["-q", "report", "--out", str(site), "--store", str(store), "--dataset", "cifar100"]) == 2
    assert "no runs of cifar100" in capsys.readouterr().err


def test_report_without_matplotlib_has_everything_but_the_plots(tmp_path: Path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    site = tmp_path / "site"
    assert main(["-q", "report", "--out", str(site), "--store", str(_store(tmp_path))]) == 0
    html = (site / "cifar10.html").read_text()
    assert "<h2>Plots</h2>" not in html and "<h2>Distilled images</h2>" in html and html.count("<table") == 5


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    store = _store(tmp_path)
    site = tmp_path / "site"
    assert main(["-q", "report", "--out", str(site), "--store", str(store)]) == 0
    dom, log = _browse(site / "cifar10.html")
    assert ":CONSOLE" not in log, [line for line in log.splitlines() if ":CONSOLE" in line]
    images = len(list((site / "cifar10").glob("*.png")))
    assert re.search(r'<body[^>]*data-images-loaded="(\d+)/(\d+)"', dom).groups() == (str(images), str(images))
    assert dom.count("<table") == 5  # accuracy, paper vs ours, LRS, storage, cost
    for caption in ("Top-1 accuracy (%) on cifar10", "Published numbers beside ours", "LRS = N(", "Storage:", "Cost:"):
        assert caption in dom
    assert '<p class="warning">' not in dom

    # the detector itself: a page with a script error and a missing image is caught
    bad = site / "bad.html"
    bad.write_text((site / "cifar10.html").read_text().replace("</body>", '<img src="missing.png"><script>'
                   "undefinedCall();</script></body>"))  # fmt: skip
    dom, log = _browse(bad)
    assert ":CONSOLE" in log and f'data-images-loaded="{images}/{images + 1}"' in dom and '<p class="warning">' in dom
