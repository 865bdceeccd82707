"""Machine facts: macOS parsers on recorded outputs, power state, the bandwidth probe."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil
import pytest

from mlxd.system import sysinfo
from tests.conftest import add_tiny, run_json, run_mlxd, wait_for

MACOS = Path(__file__).parent / "data" / "macos"


def recorded(name: str) -> str:
    return (MACOS / name).read_text()


def test_mac_facts_from_recorded_sysctl():
    facts = sysinfo.mac_facts(recorded("sysctl_m3max.txt"))
    assert facts == {
        "cpu": "Apple M3 Max",
        "chip": "Apple M3 Max",
        "ram_bytes": 128 * 2**30,
        "cores_physical": 16,
        "cores_logical": 16,
        "cores_performance": 12,
        "cores_efficiency": 4,
    }
    older = sysinfo.mac_facts(recorded("sysctl_m1_no_perflevels.txt"))
    assert older["chip"] == "Apple M1" and older["ram_bytes"] == 16 * 2**30
    assert older["cores_performance"] is None and older["cores_efficiency"] is None


@pytest.mark.parametrize(
    "name,expected",
    [
        ("pmset_batt_ac.txt", "ac"),
        ("pmset_batt_battery.txt", "battery"),
        ("pmset_batt_desktop.txt", "ac"),
    ],
)
def test_power_source(name, expected):
    assert sysinfo.parse_pmset_batt(recorded(name)) == expected


def test_power_source_unknown_text():
    assert sysinfo.parse_pmset_batt("Now drawing from 'UPS Power'\n") is None
    assert sysinfo.parse_pmset_batt("") is None


@pytest.mark.parametrize(
    "name,expected",
    [
        ("pmset_g_lowpowermode_on.txt", True),
        ("pmset_g_powermode_high.txt", False),  # powermode 2 is high power, not low
        ("pmset_g_no_power_setting.txt", None),
    ],
)
def test_low_power_mode(name, expected):
    assert sysinfo.parse_pmset_low_power(recorded(name)) is expected


def test_low_power_mode_values():
    assert sysinfo.parse_pmset_low_power(" lowpowermode         0\n") is False
    assert sysinfo.parse_pmset_low_power(" powermode            1\n") is True
    assert sysinfo.parse_pmset_low_power(" powermode            0\n") is False


def test_thermal_state():
    assert sysinfo.parse_thermal_pressure(recorded("notifyutil_thermal_nominal.txt")) == "nominal"
    assert sysinfo.parse_thermal_pressure(recorded("notifyutil_thermal_heavy.txt")) == "heavy"
    for level, state in enumerate(sysinfo.THERMAL_STATES):
        text = f"com.apple.system.thermalpressurelevel {level}\n"
        assert sysinfo.parse_thermal_pressure(text) == state
    assert sysinfo.parse_thermal_pressure("com.apple.system.thermalpressurelevel 9\n") is None
    assert sysinfo.parse_thermal_pressure("") is None
    assert sysinfo.parse_pmset_therm(recorded("pmset_therm_nominal.txt")) == "nominal"
    assert sysinfo.parse_pmset_therm(recorded("pmset_therm_throttled.txt")) == "heavy"
    assert sysinfo.parse_pmset_therm("nothing useful\n") is None


def test_power_state_on_this_machine():
    state = sysinfo.power_state()
    assert set(state) == {"power_source", "low_power_mode", "thermal_state"}
    assert state["power_source"] in ("ac", "battery", None)
    if sys.platform != "darwin":
        assert state["low_power_mode"] is None and state["thermal_state"] is None


# Two sockets of two cores with hyper-threads: 8 logical CPUs, 4 physical cores.
CPUINFO = "".join(
    f"processor\t: {n}\nmodel name\t: Test CPU\nphysical id\t: {n // 4}\n"
    f"core id\t\t: {(n % 4) // 2}\n\n"
    for n in range(8)
)


def test_linux_facts_without_psutil_agree_with_psutil():
    assert sysinfo.linux_physical_cores(CPUINFO) == 4
    assert sysinfo.linux_cpu_name(CPUINFO) == "Test CPU"
    assert sysinfo.linux_physical_cores("processor : 0\n") is None
    facts = sysinfo.machine_facts()
    assert facts["ram_bytes"] == psutil.virtual_memory().total
    assert facts["cores_logical"] == psutil.cpu_count(logical=True)
    assert facts["cores_physical"] == psutil.cpu_count(logical=False)


def test_battery_detection_reads_the_power_supply_types(tmp_path):
    (tmp_path / "AC").mkdir()
    (tmp_path / "AC" / "type").write_text("Mains\n")
    assert not sysinfo._has_battery(str(tmp_path))
    (tmp_path / "hidpp_battery_0").mkdir()
    (tmp_path / "hidpp_battery_0" / "type").write_text("Battery\n")
    assert sysinfo._has_battery(str(tmp_path))


def test_versions_read_from_folder_names_agree_with_importlib_metadata():
    from importlib import metadata

    from mlxd.system.versions import dist_version

    for dist in metadata.distributions():
        assert dist_version(dist.metadata["Name"]) == dist.version, dist.metadata["Name"]
    assert dist_version("surely-not-installed-mlxd-test") is None


def test_probe_stores_a_bandwidth_and_show_reports_it():
    before = run_json("system", "show")
    assert before["probe"] is None
    assert before["host"] and before["ram_bytes"] > 0
    assert set(before) >= {"power_source", "low_power_mode", "thermal_state", "mlx_version"}

    proc = run_mlxd("system", "probe", "--size-mb", "16", "--repeats", "2", check=True)
    assert "GB/s" in proc.stdout
    # Progress on stderr: what it measures, step i/n (1 fill + 2 kernels x (2 warm-ups + 2)).
    steps = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip().startswith("step ")]
    assert steps[0] == "step 1/9: filling a 16 MiB array", proc.stderr
    assert steps[-1] == "step 9/9: copy kernel (x + 1), run 2 of 2", proc.stderr
    assert len(steps) == 9 and "GB/s" not in proc.stderr
    after = run_json("system", "show")
    probe = after["probe"]
    assert probe["host"] == after["host"]
    assert probe["memory_bandwidth_bytes_per_s"] > 0
    assert probe["details"]["size_bytes"] == 16 * 2**20 and probe["details"]["repeats"] == 2
    assert "GB/s" in run_mlxd("system", "show", check=True).stdout
    # It ran as an ordinary job, in its own process, and left its record.
    jobs = run_json("jobs", "list")
    assert [(j["kind"], j["status"]) for j in jobs] == [("probe", "succeeded")]
    assert jobs[0]["result"]["probe_id"] == probe["id"]


def test_probe_rejects_bad_options():
    proc = run_mlxd("system", "probe", "--size-mb", "0")
    assert proc.returncode == 2 and proc.stderr.startswith("Error:")
    assert proc.stderr.count("\n") == 1


def test_measure_bandwidth_checks_its_arguments():
    from mlxd.engine.probe import default_size_bytes, measure_bandwidth

    with pytest.raises(ValueError, match="at least 1 MiB"):
        measure_bandwidth(1000, 1)
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        measure_bandwidth(1 << 20, 0)
    assert default_size_bytes(None) == 256 << 20
    assert default_size_bytes(64 << 30) == 1 << 30


def test_system_show_json_is_only_json():
    out = run_mlxd("system", "show", "--json", check=True).stdout
    assert isinstance(json.loads(out), dict)


# -- the daemon's spare child (hides the ~1 s import of mlx_lm from each job) ----------------


def spare_children(daemon_pid: int) -> list[int]:
    try:
        children = psutil.Process(daemon_pid).children()
    except psutil.NoSuchProcess:
        return []
    out = []
    for c in children:
        try:
            if "--preload" in c.cmdline() and c.status() != psutil.STATUS_ZOMBIE:
                out.append(c.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def submit(*args: str) -> int:
    return int(run_mlxd(*args, check=True).stdout.split()[2].rstrip(":"))


def test_spare_child_runs_the_next_job_and_stops_with_the_daemon(
    daemon, tiny_model_dir, monkeypatch
):
    monkeypatch.setenv("MLXD_SPARE_CHILD", "1")  # the suite's default is off (conftest)
    add_tiny(tiny_model_dir)
    daemon.start()
    first = submit("bench", "tiny", "-p", "16", "-g", "4", "-n", "1", "--warmup", "0")
    run_mlxd("jobs", "wait", str(first), "--timeout", "120", check=True)
    spare = wait_for(lambda: spare_children(daemon.pid), timeout=90, what="a spare child")[0]

    second = submit("bench", "tiny", "-p", "16", "-g", "4", "-n", "1", "--warmup", "0")
    run_mlxd("jobs", "wait", str(second), "--timeout", "120", check=True)
    logs = run_mlxd("jobs", "logs", str(second), check=True).stdout
    # The waiting child ran the job (and its log went to the job's log, not the daemon's).
    assert f"child {spare} (spare)" in logs
    assert "work " in logs
    # Each spare serves one job: a new one waits for the next.
    nxt = wait_for(lambda: spare_children(daemon.pid), timeout=90, what="the next spare")
    assert spare not in nxt and gone(spare)

    assert daemon.stop() == 0
    wait_for(lambda: all(gone(p) for p in nxt), timeout=60, what="the spare to stop")


def test_spare_children_exit_when_the_daemon_is_killed(daemon, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("MLXD_SPARE_CHILD", "1")  # the suite's default is off (conftest)
    add_tiny(tiny_model_dir)
    daemon.start()
    warm = submit("bench", "tiny", "-p", "16", "-g", "4", "-n", "1", "--warmup", "0")
    run_mlxd("jobs", "wait", str(warm), "--timeout", "120", check=True)
    spare = wait_for(lambda: spare_children(daemon.pid), timeout=90, what="a spare child")[0]
    long = submit("bench", "tiny", "-p", "16", "-g", "1900", "-n", "100")
    wait_for(
        lambda: run_json("jobs", "show", str(long))["pid"] == spare,
        timeout=90,
        what="the spare to take the job",
    )
    idle = wait_for(lambda: spare_children(daemon.pid), timeout=90, what="the next spare")
    daemon.kill9()
    # The busy child and the idle spare both notice their daemon is gone.
    wait_for(
        lambda: gone(spare) and all(gone(p) for p in idle),
        timeout=60,
        what="the orphaned children to exit",
    )
    assert run_json("jobs", "show", str(long))["status"] == "running"  # recovered on restart
