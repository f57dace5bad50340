"""``qnetlab sim``: the simulated lab as a service (``qnetlab sim serve [LAB]``) and the files
of generated topologies (``qnetlab sim generate SPEC --out DIR``).

The one command module that starts the simulator (import contracts in pyproject.toml): it
imports :mod:`qnetlab.sim_server` only inside the command, so ``qnetlab --help`` and every
other command never load it.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import click
import yaml

DEFAULT_LAB = "qnetlab.sim_instruments.labs:link.yaml"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def station_template(lab_path: str) -> dict[str, Any]:
    """The bundled simulated station file whose instruments open ``lab_path`` (parsed): it
    names each resource's driver and the topology. ClickException if none does."""
    from pyvisa_qnetlab import resolve_lab_path
    from qnetlab import stations
    from qnetlab.sim_server.station import uses_lab

    for name in stations.available():
        template = yaml.safe_load(stations.station_file(name).read_text()) or {}
        if uses_lab(template, lab_path, resolve_lab_path):
            return template
    generated = _generated_station(lab_path)
    if generated is not None and uses_lab(generated, lab_path, resolve_lab_path):
        return generated
    raise click.ClickException(f"lab {lab_path}: no bundled station file uses it (bundled: "
                               f"{', '.join(stations.available())}); give one with --station-from")


def _generated_station(lab_path: str) -> dict[str, Any] | None:
    """The station file of a generated lab file (parsed): the one written beside it
    (``chain-16.yaml`` -> ``chain-16.station.yaml``, as ``qnetlab sim generate`` and the cache
    place them), else the station of the spec its ``x-lab`` names; None for other labs."""
    from qnetlab import stations, topologies

    path = Path(lab_path.partition("?")[0])
    beside = path.with_name(path.stem + ".station.yaml")
    if beside.is_file():
        return yaml.safe_load(beside.read_text()) or {}
    try:
        spec = (yaml.safe_load(path.read_text()) or {}).get("x-lab", {}).get("spec")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if not spec or not topologies.is_spec(str(spec)):
        return None
    return yaml.safe_load(stations.station_file(str(spec)).read_text()) or {}


def station_yaml(served: Any, template: dict[str, Any], lab: str,
                 hardware: dict[str, Any] | None = None) -> str:
    """The served lab's station file as YAML text, with its header comment: ``template`` (the
    simulated station) re-addressed, or ``hardware`` (a hardware station file) pointed at the
    served lab's sockets."""
    from qnetlab.sim_server import served_station
    from qnetlab.sim_server.station import HEADER, hardware_station

    if hardware is None:
        station = served_station(template, served)
    else:
        try:
            station = hardware_station(hardware, template, served)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--hardware") from None
    return HEADER.format(lab=lab, speed=served.speed) + yaml.safe_dump(station, sort_keys=False)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a reader polling for it never sees half)."""
    path = path.resolve()
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.",
                                     delete=False) as tmp:
        tmp.write(text)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)


def _load_template(option: str | None, lab_path: str, lab: str) -> dict[str, Any]:
    """The simulated station naming LAB's drivers: --station-from, the generated station of a
    topology spec, else the bundled station that uses the lab file."""
    from qnetlab import topologies

    if option is None and topologies.is_spec(lab):
        return _load_station(lab, "LAB")
    if option is None:
        return station_template(lab_path)
    return _load_station(option, "--station-from")


def _load_station(name: str, hint: str) -> dict[str, Any]:
    """A station file by bundled name or path, parsed; BadParameter naming ``hint`` if none."""
    from qnetlab import stations

    try:
        return yaml.safe_load(stations.station_file(name).read_text()) or {}
    except FileNotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


@click.group(name="sim")
def sim() -> None:
    """The simulated lab as a service: serve it over TCP for any VISA client."""


@sim.command(name="generate")
@click.argument("spec")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory to write the lab file and the station file into (created).")
@click.option("--seed", type=int, default=None,
              help="Seed of the world's hidden truth (default: the generator's).")
def generate(spec: str, out: Path, seed: int | None) -> None:
    """Write the lab file and station file of a generated topology SPEC for editing.

    SPEC is chain:N (N nodes in a line), star:N (N nodes around a hub of heralding stations)
    or twosite[:N] (two sites 50 km apart), N from 2 to 64. The station file opens the lab
    file by its absolute path: `qnetlab --station OUT/<spec>.station.yaml status`."""
    from pyvisa_qnetlab import instruments_dir
    from qnetlab import topologies

    try:
        lab, station = topologies.write_files(spec, out, instruments_dir(), seed)
    except topologies.SpecError as exc:
        raise click.BadParameter(str(exc), param_hint="SPEC") from None
    except OSError as exc:
        raise click.ClickException(f"--out {out}: cannot write there ({exc.strerror or exc})"
                                   ) from None
    click.echo(f"{lab}\n{station}")


@sim.command(name="serve")
@click.argument("lab", required=False, default=DEFAULT_LAB)
@click.option("--speed", type=click.FloatRange(min=0, min_open=True, max=1e9), default=1.0,
              show_default=True, help="Lab seconds per wall second (1: real time).")
@click.option("--station-out", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              default=None, help="Write the station file here instead of printing it.")
@click.option("--port-base", type=click.IntRange(1, 65535), default=None,
              help="Assign ports from P upwards (default: the lab file's, else any free port).")
@click.option("--station-from", default=None, metavar="STATION",
              help="Simulated station file naming the lab's drivers (default: the bundled one "
                   "that uses LAB).")
@click.option("--seed", type=int, default=None, help="Seed of the world (default: the lab's).")
@click.option("--profile", default=None, metavar="NAME",
              help="Device profile of the world: sota-2025 or target-2030 (default: the lab's).")
@click.option("--hardware", default=None, metavar="STATION",
              help="Write this hardware station file (e.g. hw_link: its drivers, timeouts and "
                   "limits) pointed at the served lab instead of the simulated one.")
def serve(lab: str, speed: float, station_out: Path | None, port_base: int | None,
          station_from: str | None, seed: int | None, profile: str | None,
          hardware: str | None) -> None:
    """Serve every instrument of LAB (a lab file, or a generated topology such as chain:16;
    default the built-in link lab) on 127.0.0.1.

    Prints the station file whose addresses reach them (visalib "@py"), or writes it to
    --station-out, then serves until SIGINT, SIGTERM or SIGHUP and shuts down cleanly."""
    from pyvisa_qnetlab import resolve_lab_path
    from qnetlab.sim_server import ServedLab

    try:
        lab_path = resolve_lab_path(lab)
    except (FileNotFoundError, ValueError) as exc:  # ValueError: a bad topology spec
        raise click.BadParameter(str(exc), param_hint="LAB") from None
    template = _load_template(station_from, lab_path, lab)
    hardware_file = None if hardware is None else _load_station(hardware, "--hardware")
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in STOP_SIGNALS}
    try:
        try:
            served = ServedLab(lab_path, speed=speed, port_base=port_base, seed=seed,
                               profile=profile)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        with served:
            text = station_yaml(served, template, lab, hardware_file)
            if station_out is None:
                click.echo(text, nl=False)
                sys.stdout.flush()
            else:
                write_atomically(station_out, text)
            click.echo(f"qnetlab: serving {len(served.resources)} instruments of {lab} at "
                       f"speed {speed:g}; lab clock on port {served.clock_port}; "
                       "stop with Ctrl-C", err=True)
            while not stop.wait(0.2):
                pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    click.echo("qnetlab: served lab stopped", err=True)
