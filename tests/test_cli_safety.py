"""The CLI never loses user data or finished work, and refuses bad parameters plainly.

- no output onto an input (also through a symbolic or hard link), exit 2 before any work;
- every output path checked before the work starts (folder, missing or unwritable
  folder, not a regular file, the same file named twice);
- replacing an existing output is announced, ``--no-clobber`` refuses it, writes are atomic;
- ``pkpd pk --param CL=-4`` is an error (exit 2), not concentrations of 1e25;
- messages carry plain numbers, not NumPy reprs (``np.int64(14)``);
- XLA's "circular simplification loop" log lines do not reach the user.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pkpd.cli
from pkpd.errors import ModelError, PkpdError

CARD = "kloft2006_docetaxel"
PATIENT = """ID,TIME,DV,AMT,RATE,EVID,MDV,CMT,DVID,BSA,SEX,PERF,PC,AAG
1,0,.,180,180,1,1,1,0,1.8,1,0,0,1.34
1,1,2.5,.,.,0,0,0,1,1.8,1,0,0,1.34
1,24,4.1,.,.,0,0,0,2,1.8,1,0,0,1.34
1,96,2.2,.,.,0,0,0,2,1.8,1,0,0,1.34
"""
NP_REPR = re.compile(r"np\.(int|float|bool|str)\w*\(")


@pytest.fixture
def patient(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(PATIENT)
    return path


@pytest.fixture
def no_work(monkeypatch):
    """Make every expensive step fail loudly: a refusal must come before any of them."""

    def boom(*args, **kwargs):
        raise AssertionError("the work started before the output paths were checked")

    import pkpd.data.validation
    import pkpd.forecasting.forecast
    import pkpd.infer.fit
    import pkpd.model.pk.predict
    import pkpd.stats.simulate

    monkeypatch.setattr(pkpd.forecasting.forecast, "forecast", boom)
    monkeypatch.setattr(pkpd.infer.fit, "fit", boom)
    monkeypatch.setattr(pkpd.stats.simulate, "simulate", boom)
    monkeypatch.setattr(pkpd.model.pk.predict, "predict_pk", boom)
    monkeypatch.setattr(pkpd.data.validation, "check_dataset", boom)
    return boom


def cli(argv, capsys):
    status = pkpd.cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def commands(patient, target):
    """Every command with an output, writing to ``target``."""
    return {
        "fit": ["fit", patient, "--model", CARD, "--method", "map", "--steps", "50", "--out", target],
        "forecast-json": ["forecast", "--prior", CARD, "--data", patient, "--json", target],
        "forecast-plot": ["forecast", "--prior", CARD, "--data", patient, "--plot", target],
        "simulate": ["simulate", CARD, "--regimen", "100 mg/m2 1h q21d x1", "--out", target],
        "pk": ["pk", patient, "--model", "1cmt", "--param", "CL=4,V=10", "--out", target],
    }


# ------------------------------------------------------------------ outputs onto inputs


@pytest.mark.parametrize("how", ["same name", "symbolic link", "hard link", "other spelling"])
def test_forecast_json_onto_its_data_is_refused(patient, tmp_path, capsys, no_work, how):
    target = {"same name": patient, "other spelling": tmp_path / "." / "p.csv",
              "symbolic link": tmp_path / "link.csv", "hard link": tmp_path / "hard.csv"}[how]
    if how == "symbolic link":
        target.symlink_to(patient)
    elif how == "hard link":
        os.link(patient, target)
    status, out, err = cli(["forecast", "--prior", CARD, "--data", patient, "--json", target], capsys)
    assert status == 2, err
    assert "refusing to write an output onto an input" in err and "--json" in err and "--data" in err
    assert "Traceback" not in err
    assert patient.read_text() == PATIENT


def test_outputs_onto_inputs_for_every_command(patient, tmp_path, capsys, no_work):
    nc = tmp_path / "data.nc"  # a data file whose name fit would accept as output
    nc.write_text(PATIENT)
    card = tmp_path / "card.toml"
    card.write_text("# a model card file\n")
    cases = [
        ["pk", patient, "--model", "1cmt", "--param", "CL=4,V=10", "--out", patient],
        ["fit", nc, "--model", CARD, "--out", nc],
        ["simulate", card, "--regimen", "100 mg 1h", "--out", card],
        ["forecast", "--prior", CARD, "--data", patient, "--plot", patient],
    ]
    for argv in cases:
        status, _, err = cli(argv, capsys)
        assert status == 2 and "onto an input" in err, (argv, err)
    assert patient.read_text() == PATIENT and nc.read_text() == PATIENT
    assert card.read_text() == "# a model card file\n"


def test_issue_example_in_a_subprocess(patient, tmp_path):
    """``pkpd forecast --data p.csv --json p.csv`` (the issue's example): exit 2, data intact."""
    proc = subprocess.run([sys.executable, "-m", "pkpd", "forecast", "--prior", CARD, "--data", "p.csv",
                           "--json", "p.csv"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "onto an input" in proc.stderr and "Traceback" not in proc.stderr
    assert patient.read_text() == PATIENT


# ------------------------------------------------------------------ output paths before work


@pytest.mark.parametrize("command", ["fit", "forecast-json", "forecast-plot", "simulate", "pk"])
@pytest.mark.parametrize("problem", ["folder", "missing folder", "parent is a file", "unwritable folder",
                                     "not a regular file"])
def test_bad_output_path_is_an_error_before_any_work(patient, tmp_path, capsys, no_work, command, problem):
    suffix = {"fit": ".nc", "forecast-json": ".json", "forecast-plot": ".png"}.get(command, ".csv")
    if problem == "folder":
        target = tmp_path / f"folder{suffix}"
        target.mkdir()
        phrase = "is a folder"
    elif problem == "missing folder":
        target = tmp_path / "no" / "such" / f"out{suffix}"
        phrase = "does not exist"
    elif problem == "parent is a file":
        target = patient / f"out{suffix}"
        phrase = "is not a folder"
    elif problem == "unwritable folder":
        if not Path("/proc/self").is_dir():
            pytest.skip("needs Linux /proc (a folder nobody can create files in, even root)")
        target = Path("/proc") / f"pkpd-test{suffix}"
        phrase = "cannot write in the folder"
    else:  # a named pipe: os.replace would put a regular file in its place
        if not hasattr(os, "mkfifo"):
            pytest.skip("needs named pipes")
        target = tmp_path / f"pipe{suffix}"
        os.mkfifo(target)
        phrase = "not a regular file"
    status, _, err = cli(commands(patient, target)[command], capsys)
    assert status == 2, err
    assert phrase in err and str(target) in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "no").exists()


def test_demo_out_onto_an_existing_file(tmp_path, capsys, no_work):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    status, _, err = cli(["demo", "--out", existing], capsys)
    assert status == 2 and "is not a folder" in err
    assert existing.read_text() == "keep me"
    status, _, err = cli(["demo", "--out", tmp_path / "no" / "such" / "folder"], capsys)
    assert status == 2 and "does not exist" in err
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "forecast.json").write_text("{}")
    status, _, err = cli(["demo", "--out", folder, "--no-clobber"], capsys)
    assert status == 2 and "forecast.json" in err and "--no-clobber" in err


def test_two_outputs_naming_the_same_file(patient, tmp_path, capsys, no_work):
    status, _, err = cli(["forecast", "--prior", CARD, "--data", patient, "--json", tmp_path / "a",
                          "--plot", tmp_path / "a"], capsys)
    assert status == 2 and "name the same file" in err


# ------------------------------------------------------------------ replacing, --no-clobber


def test_replacing_is_announced_and_no_clobber_refuses(patient, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    out.write_text("old predictions\n")
    argv = ["pk", patient, "--model", "1cmt", "--param", "CL=4,V=10", "--out", out]
    status, stdout, err = cli(argv + ["--no-clobber"], capsys)
    assert status == 2 and "--no-clobber" in err and str(out) in err
    assert out.read_text() == "old predictions\n"
    status, stdout, err = cli(argv, capsys)
    assert status == 0, err
    assert f"{out} exists and will be replaced" in err
    assert f"wrote {out} (replaced the previous file)" in stdout
    assert pd.read_csv(out)["PRED"].notna().all()
    new = tmp_path / "new.csv"
    status, stdout, err = cli(["pk", patient, "--model", "1cmt", "--param", "CL=4,V=10", "--out", new,
                               "--no-clobber"], capsys)
    assert status == 0 and f"wrote {new}" in stdout and "replaced" not in stdout + err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.csv", "p.csv", "pred.csv"]


def test_atomic_writes_never_replace_under_no_clobber_or_after_abandon(tmp_path):
    from pkpd import io

    target = tmp_path / "out.txt"
    with pytest.raises(PkpdError, match="not replaced"):
        with io.atomic_path(target, overwrite=False) as tmp:
            tmp.write_text("new")
            target.write_text("appeared meanwhile")  # another process created it
    assert target.read_text() == "appeared meanwhile"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    # a group: both or neither
    a, b = tmp_path / "a.json", tmp_path / "b.png"
    with pytest.raises(RuntimeError):
        with io.atomic_paths([a, b], [".json", ".png"]) as (ta, tb):
            ta.write_text("a")
            raise RuntimeError("the plot failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    # after an interrupt abandoned the writes, nothing is renamed any more
    try:
        with pytest.raises(KeyboardInterrupt):
            with io.atomic_path(target) as tmp:
                tmp.write_text("late result")
                assert io.abandon_writes() == [str(tmp)]
                assert not tmp.exists()
        assert target.read_text() == "appeared meanwhile"
        with pytest.raises(KeyboardInterrupt):
            with io.atomic_path(tmp_path / "later.txt"):
                pass
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    finally:
        io._reset_for_tests()


# ------------------------------------------------------------------ parameter domains


@pytest.mark.parametrize("params,name", [
    ("CL=-4,V=10", "CL = -4"), ("CL=4,V=0", "V = 0"), ("CL=4,V=nan", "V = nan"),
    ("CL=4,V=inf", "V = inf"), ("CL=4,V=10,KA=-1", "KA = -1"), ("CL=4,V=10,F1=-0.5", "F1 = -0.5"),
    ("CL=4,V=10,ALAG1=-2", "ALAG1 = -2"),
])
def test_pk_parameters_outside_their_domain(patient, capsys, params, name):
    status, out, err = cli(["pk", patient, "--model", "1cmt", "--param", params], capsys)
    assert status == 2, out
    assert name in err and "outside its domain" in err and "Traceback" not in err
    assert "PRED" not in out  # no table of meaningless concentrations


def test_pk_domain_in_the_library_and_from_columns(tmp_path):
    from pkpd.model.pk.predict import predict_pk

    text = PATIENT.replace("ID,TIME", "ID,TIME").splitlines()
    rows = [text[0] + ",CLI"] + [r + (",-1" if i == 0 else ",4") for i, r in enumerate(text[1:])]
    path = tmp_path / "cl.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ModelError, match=r"CL = column 'CLI': line 2 has -1"):
        predict_pk(str(path), "1cmt", {"CL": "CLI", "V": 10.0})
    with pytest.raises(ModelError, match="V = -3 for subject 1"):
        predict_pk(str(path), "1cmt", {"CL": 4.0, "V": np.array([-3.0])})
    good = predict_pk(str(path), "1cmt", {"CL": 4.0, "V": 10.0})
    assert np.all(np.isfinite(good)) and np.all(good < 100)


# ------------------------------------------------------------------ NumPy reprs


def test_messages_carry_plain_numbers(tmp_path, capsys):
    from pkpd.data.dataset import read_dataset

    bad = tmp_path / "bad.csv"
    bad.write_text("ID,TIME,DV,AMT,EVID,MDV,DVID\n14,0,.,100,1,1,0\n14,1,3,.,0,0,9\n14,2,1e308,.,0,0,1\n"
                   "14,-1,2,.,0,0,1\n15,0,2,.,0,0,2\n")
    status, out, err = cli(["check", bad], capsys)
    assert status == 2 and not NP_REPR.search(out + err), out + err
    ds = read_dataset(bad, validate=False)
    with pytest.raises(PkpdError) as info:
        ds.observation_arrays()
    assert "[9]" in str(info.value) and not NP_REPR.search(str(info.value))
    with pytest.raises(PkpdError) as info:
        ds.subset(np.array([16]))  # IDs as a NumPy array, e.g. from a data frame column
    assert not NP_REPR.search(str(info.value)) and "[16]" in str(info.value)
    status, out, err = cli(["pk", bad, "--model", "1cmt", "--param", "CL=-4,V=10"], capsys)
    assert status == 2 and not NP_REPR.search(out + err), err


# ------------------------------------------------------------------ XLA log noise

NOISE = ("E1130 16:44:33.477893    7411 algebraic_simplifier.cc:10564] Algebraic simplifier is likely stuck "
         "in a circular simplification loop and ran for 50 runs on computation main.96")


def test_xla_noise_is_filtered_from_the_programs_stderr(tmp_path):
    """The filter drops exactly the XLA line written to file descriptor 2, nothing else."""
    code = f"""
import os, sys
sys.argv[1:] = ["models"]
import pkpd.cli.models as m
def noisy(args):
    os.write(2, b"{NOISE}\\n" * 30 + b"E0000 a different native error line\\n")
    print("a Python warning line", file=sys.stderr)
    return 0
m.run = noisy
from pkpd.cli import main
sys.exit(main())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "circular simplification loop" not in proc.stderr
    assert "a different native error line" in proc.stderr and "a Python warning line" in proc.stderr


def _cold_cache_env(tmp_path):
    env = dict(os.environ)
    env["PKPD_CACHE_DIR"] = str(tmp_path / "jax-cache")  # compile for real: the line comes from compiling
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def test_simulate_stderr_has_no_xla_noise(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pkpd", "simulate", CARD, "--regimen", "100 mg/m2 1h q21d x2",
                           "--n", "20", "--covariates", "BSA=1.8,SEX=1,PERF=0,PC=0,AAG=1.34", "--out", "sim.csv"],
                          cwd=tmp_path, env=_cold_cache_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "circular simplification loop" not in proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


@pytest.mark.slow
def test_fit_stderr_has_no_xla_noise(tmp_path):
    """A short MAP fit to two patients of the example data compiles the programs that made
    XLA print the line a dozen times (13 lines with jax 0.10 before the filter)."""
    example = pd.read_csv(Path(__file__).resolve().parents[1] / "data" / "example.csv", dtype=str)
    example[example["ID"].astype(int) <= 2].to_csv(tmp_path / "two.csv", index=False)
    proc = subprocess.run([sys.executable, "-m", "pkpd", "fit", "two.csv", "--model", CARD, "--method", "map",
                           "--steps", "50", "--no-progress", "--out", "fit.nc"],
                          cwd=tmp_path, env=_cold_cache_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "circular simplification loop" not in proc.stderr
    assert (tmp_path / "fit.nc").is_file()


def test_demo_writes_its_files_together_and_announces_replacement(tmp_path, capsys, monkeypatch):
    """The demo's three outputs (with the fit and forecast replaced by fakes to stay fast)."""
    import pkpd.forecasting.forecast
    import pkpd.infer.fit

    class FakeFit:
        def summary(self):
            return pd.DataFrame({"mean": [1.0]}, index=["tv_slope"])

        def save(self, path):
            Path(path).write_text("netcdf")

    class FakeForecast:
        def table(self):
            return pd.DataFrame({"regimen": ["planned"], "p_grade4": [0.1]})

        def to_json(self, path):
            Path(path).write_text("{}")

        def plot(self, path):
            Path(path).write_bytes(b"png")

        def check(self):
            return ["patient 8: 2 divergent transition(s)"]

    monkeypatch.setattr(pkpd.infer.fit, "fit", lambda *a, **k: FakeFit())
    monkeypatch.setattr(pkpd.forecasting.forecast, "forecast", lambda *a, **k: FakeForecast())
    out = tmp_path / "demo"
    status, stdout, err = cli(["demo", "--out", out], capsys)
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["forecast.json", "forecast.png", "population_fit.nc"]
    assert "replaced" not in stdout
    assert "warning: patient 8: 2 divergent transition(s)" in stdout  # the forecast's own check, shown
    (out / "forecast.json").write_text("old")
    status, stdout, err = cli(["demo", "--out", out], capsys)
    assert status == 0 and f"wrote {out / 'forecast.json'} (replaced the previous file)" in stdout
    assert "forecast.json exists and will be replaced" in err
    assert (out / "forecast.json").read_text() == "{}"

    def failing_plot(self, path):
        Path(path).write_bytes(b"half a png")
        raise PkpdError("the plot failed")

    monkeypatch.setattr(FakeForecast, "plot", failing_plot)
    (out / "forecast.json").write_text("old")
    status, stdout, err = cli(["demo", "--out", out], capsys)
    assert status == 2 and "the plot failed" in err
    assert (out / "forecast.json").read_text() == "old"  # none of the three replaced
    assert sorted(p.name for p in out.iterdir()) == ["forecast.json", "forecast.png", "population_fit.nc"]


@pytest.mark.parametrize("extra,message", [
    (["--centre", "NOPE"], "no IIV"),
    (["--centre", "Circ0", "--parameterisation", "centred"], "exclude each other"),
    (["--centre", ","], "expected IIV parameter names"),
])
def test_fit_partial_centring_arguments(patient, tmp_path, capsys, extra, message):
    """``pkpd fit --centre``: unknown parameters and contradictory options are plain errors (exit 2)."""
    status, out, err = cli(["fit", patient, "--model", CARD, "--method", "map", "--steps", "20",
                            "--out", tmp_path / "f.nc", *extra], capsys)
    assert status == 2, out
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "f.nc").exists()


@pytest.mark.parametrize("command, cores, expected", [("forecast", 2, 2), ("plan", 3, 3), ("fit", 2, 1),
                                                      ("forecast", 1, 1)])
def test_forecast_commands_use_one_host_device_per_core(tmp_path, command, cores, expected):
    """``pkpd forecast`` and ``pkpd plan`` expose each CPU core as a JAX host device (a batch
    forecast splits its patients and draws across them); other commands keep one device. The
    command's work is replaced by a fake that reports the devices JAX then sees."""
    code = f"""
import os, sys
os.sched_getaffinity = lambda pid: set(range({cores}))
sys.argv[1:] = ["{command}"]
import pkpd.cli.{command} as m
import jax
def report(args):
    print(len(jax.devices()), os.environ.get("XLA_FLAGS", ""))
    return 0
m.run = report
import pkpd.cli as cli
parser = cli.build_parser
def build():
    p = parser()
    p.parse_args = lambda argv=None: __import__("argparse").Namespace(command="{command}", func=report)
    return p
cli.build_parser = build
sys.exit(cli.main())
"""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[0]) == expected, proc.stdout


def test_a_users_host_device_count_is_kept(monkeypatch):
    from pkpd.cli import _cores_as_devices

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=5 --xla_other=1")
    _cores_as_devices()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=5 --xla_other=1"
    monkeypatch.setenv("XLA_FLAGS", "--xla_other=1")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    _cores_as_devices()
    assert os.environ["XLA_FLAGS"] == "--xla_other=1 --xla_force_host_platform_device_count=4"
