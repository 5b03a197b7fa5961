"""The deployment recipes in deploy/ stay runnable.

Docker, Kubernetes and Slurm are not available to the tests, so each recipe is
checked as far as it can be here: every YAML file parses and has the structure
its tool expects, shell scripts pass ``bash -n``, the Dockerfile's base image
is pinned and its COPY sources exist, no recipe publishes the scheduler or
dashboard ports, and every ``daskem ...`` command line found anywhere in
deploy/ (YAML command arrays, shell scripts, the Dockerfile, commands in
comments and in the README's code blocks) is parsed by the real CLI, so a
renamed or removed option breaks these tests instead of the recipes.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap

import pytest
import yaml  # PyYAML (also a dependency of dask)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(REPO, "deploy")
EXAMPLES = os.path.join(REPO, "examples")


def _files(root, *suffixes):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(suffixes):
                out.append(os.path.join(dirpath, name))
    return out


def _rel(path):
    return os.path.relpath(path, REPO)


def _load_yaml(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def _read(path):
    with open(path) as f:
        return f.read()


YAML_FILES = _files(DEPLOY, ".yaml", ".yml")
SHELL_FILES = _files(DEPLOY, ".sh", ".sbatch") + _files(EXAMPLES, ".sh")


def test_recipes_exist():
    expected = [
        "README.md",
        "docker/Dockerfile",
        "docker/compose.yaml",
        "kubernetes/daskjob.yaml",
        "kubernetes/daskcluster.yaml",
        "kubernetes/values.yaml",
        "slurm/daskem_fit.sbatch",
        "slurm/slurm_cluster.py",
    ]
    missing = [p for p in expected if not os.path.isfile(os.path.join(DEPLOY, p))]
    assert not missing


# ---------------------------------------------------------------------------
# Extracting `daskem ...` command lines
# ---------------------------------------------------------------------------

_VAR = re.compile(r"\$\{(\w+)(?::?[-=]([^}]*))?\}|\$(\w+)|\$\((\w+)\)")


def _expand(text):
    """Replace shell ($X, ${X:-default}) and Kubernetes ($(X)) variables.

    A default is used when there is one, otherwise the placeholder ``1``
    (valid both as a path and as a number).
    """
    for _ in range(5):  # defaults may themselves hold variables
        new = _VAR.sub(lambda m: m.group(2) if m.group(2) is not None else "1", text)
        if new == text:
            break
        text = new
    return text


def _logical_lines(text):
    """Lines with backslash continuations joined; shell/YAML comment markers removed."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            line = line.lstrip("#").strip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    if current:
        lines.append(current)
    return lines


def _commands_in_text(text):
    """`daskem ...` commands at the start of a (logical) line, as argv lists."""
    commands = []
    for line in _logical_lines(text):
        m = re.match(r"^(?:exec\s+|\$\s+)?daskem(\s.*)?$", line)
        if not m:
            continue
        argv = shlex.split(_expand(line), comments=True)
        if argv[0] in ("exec", "$"):
            argv = argv[1:]
        commands.append(argv)
    return commands


def _markdown_code(text):
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    return "\n".join(blocks)


def _commands_in_yaml(node):
    """Command arrays ``[daskem, ...]`` and ``sh -c "daskem ..."`` strings anywhere in a document."""
    found = []
    if isinstance(node, dict):
        for value in node.values():
            found += _commands_in_yaml(value)
    elif isinstance(node, list):
        if node and all(isinstance(x, (str, int, float)) for x in node) and node[0] == "daskem":
            found.append([_expand(str(x)) for x in node])
        else:
            for value in node:
                found += _commands_in_yaml(value)
    elif isinstance(node, str) and "daskem " in node:
        found += _commands_in_text(node)
    return found


def _commands_in_dockerfile(text):
    found = []
    for line in _logical_lines(text):
        m = re.match(r"^(CMD|ENTRYPOINT)\s+(\[.*\])\s*$", line)
        if m:
            argv = json.loads(m.group(2))
            if argv and argv[0] == "daskem":
                found.append(argv)
        m = re.match(r"^RUN\s+(.*)$", line)
        if m:
            for part in re.split(r"&&|;", m.group(1)):
                found += _commands_in_text(part.strip())
    return found


def _all_commands():
    """(file, argv) for every daskem command line in deploy/ and the example shell scripts."""
    out = []
    for path in _files(DEPLOY, "") + _files(EXAMPLES, ".sh"):
        text = _read(path)
        name = os.path.basename(path)
        if name.endswith((".yaml", ".yml")):
            cmds = [c for doc in _load_yaml(path) for c in _commands_in_yaml(doc)]
            cmds += _commands_in_text("\n".join(
                line for line in text.splitlines() if line.lstrip().startswith("#")
            ))
        elif name == "Dockerfile" or name.startswith("Dockerfile."):
            cmds = _commands_in_dockerfile(text)
        elif name.endswith(".md"):
            cmds = _commands_in_text(_markdown_code(text))
        elif name.endswith((".sh", ".sbatch", ".bash")):
            cmds = _commands_in_text(text)
        else:  # Python etc.: commands there are exercised by running them
            cmds = []
        out += [(_rel(path), argv) for argv in cmds]
    return out


def test_command_extraction_finds_the_recipes():
    """Guard against the extractor silently finding nothing."""
    found = {}
    for path, argv in _all_commands():
        found.setdefault(path, []).append(argv)
    for path in ("deploy/docker/compose.yaml", "deploy/kubernetes/daskjob.yaml",
                 "deploy/slurm/daskem_fit.sbatch", "deploy/docker/Dockerfile"):
        assert path in found, f"no daskem command found in {path}"
    fits = [argv for cmds in found.values() for argv in cmds if argv[1:2] == ["fit"]]
    assert len(fits) >= 4


# ---------------------------------------------------------------------------
# Parsing them with the real CLI
# ---------------------------------------------------------------------------


def _cli_group():
    cli = pytest.importorskip("daskem.cli")
    import typer.main

    return typer.main.get_command(cli.app)


def parse_cli(argv):
    """Parse a ``daskem ...`` argv with the CLI's own click parser, without running it.

    Returns (subcommand name, params dict). ``--help`` anywhere returns
    (name, None) once click accepted everything before it.
    """
    assert argv[0] == "daskem", argv
    group = _cli_group()
    try:
        with group.make_context("daskem", list(argv[1:])) as ctx:
            rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
            if not rest:
                return None, dict(ctx.params)
            name, cmd, args = group.resolve_command(ctx, rest)
            with cmd.make_context(name, args, parent=ctx) as sub:
                return name, dict(sub.params)
    except Exception as e:
        # --help: click's (or Typer's vendored click's) Exit(0)
        if type(e).__name__ == "Exit" and getattr(e, "exit_code", None) == 0:
            return None, None
        raise


def _check_fit_semantics(where, params):
    """What the fit command checks before running, on the parsed values."""
    assert params["data"], f"{where}: no DATA"
    assert params["out"], f"{where}: no --out"
    if params["resume"]:
        assert params["checkpoint"], f"{where}: --resume needs --checkpoint"
    assert not (params["scheduler"] and params["scheduler_file"]), f"{where}: both scheduler options"


@pytest.mark.parametrize(
    "where,argv",
    [pytest.param(path, argv, id=f"{path}:{' '.join(argv[:2])}") for path, argv in _all_commands()],
)
def test_recipe_command_parses(where, argv, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    name, params = parse_cli(argv)
    if name == "fit":
        _check_fit_semantics(where, params)


def test_parser_rejects_a_bad_option():
    """The parse check itself can fail (so the test above means something)."""
    for bad in (["--no-such-option"], ["--covariance-type", "banana"], ["--n-components", "x"]):
        with pytest.raises(Exception) as info:
            parse_cli(["daskem", "fit", "x.zarr", "--out", "m.npz", *bad])
        assert getattr(info.value, "exit_code", None) == 2, info.value  # a usage error
        assert bad[0] in info.value.format_message()
    with pytest.raises(Exception) as info:
        parse_cli(["daskem", "fitt", "x.zarr"])
    assert getattr(info.value, "exit_code", None) == 2


def test_checkpointed_fits_resume(monkeypatch):
    """Batch recipes are restartable: every fit with --checkpoint also has --resume."""
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    batch = [(p, a) for p, a in _all_commands() if a[1:2] == ["fit"] and "--checkpoint" in a]
    assert len(batch) >= 3
    for path, argv in batch:
        assert "--resume" in argv, path


# ---------------------------------------------------------------------------
# YAML manifests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_yaml_parses(path):
    docs = _load_yaml(path)
    assert docs and all(isinstance(d, dict) for d in docs)


def _walk(node, key=None):
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from _walk(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_no_public_scheduler_or_dashboard(path):
    for doc in _load_yaml(path):
        for key, value in _walk(doc):
            if key in ("type", "serviceType"):
                assert value not in ("LoadBalancer", "NodePort"), f"{key}: {value}"


def test_compose():
    (compose,) = _load_yaml(os.path.join(DEPLOY, "docker", "compose.yaml"))
    services = compose["services"]
    assert {"scheduler", "worker", "fit"} <= set(services)

    scheduler = services["scheduler"]
    assert scheduler["command"][:2] == ["dask", "scheduler"]
    for service in services.values():
        for port in service.get("ports", []):
            # "127.0.0.1:8787:8787": published on the host's loopback only
            assert str(port).startswith("127.0.0.1:"), port
            assert not str(port).endswith(":8786"), port

    worker = services["worker"]
    assert worker["command"][:3] == ["dask", "worker", "tcp://scheduler:8786"]
    assert worker["deploy"]["replicas"] >= 1

    fit = services["fit"]
    cmd = fit["command"]
    assert cmd[:2] == ["daskem", "fit"] and cmd[2].startswith("/data/")
    assert cmd[cmd.index("--scheduler") + 1] == "tcp://scheduler:8786"
    assert cmd[cmd.index("--checkpoint") + 1].startswith("/data/")
    assert cmd[cmd.index("--out") + 1].startswith("/data/")
    assert fit.get("restart", "no") == "no"  # one-shot

    # the same data volume at the same path for the client and every worker
    for name in ("worker", "fit"):
        assert any(str(v).endswith(":/data") for v in services[name]["volumes"]), name

    # the build context is the repository root and the Dockerfile exists
    compose_dir = os.path.join(DEPLOY, "docker")
    for service in services.values():
        build = service["build"]
        context = os.path.normpath(os.path.join(compose_dir, build["context"]))
        assert os.path.isfile(os.path.join(context, "pyproject.toml"))
        assert os.path.isfile(os.path.join(context, build["dockerfile"]))
        assert service["image"] == services["scheduler"]["image"]


def _k8s(name):
    (doc,) = _load_yaml(os.path.join(DEPLOY, "kubernetes", name))
    return doc


def _check_dask_cluster_spec(spec, cluster_name):
    scheduler, worker = spec["scheduler"], spec["worker"]
    (sched_container,) = scheduler["spec"]["containers"]
    assert sched_container["args"][:2] == ["dask", "scheduler"]
    ports = {p["name"]: p["containerPort"] for p in sched_container["ports"]}
    assert ports == {"tcp-comm": 8786, "http-dashboard": 8787}
    service = scheduler["service"]
    assert service["type"] == "ClusterIP"
    assert service["selector"] == {
        "dask.org/cluster-name": cluster_name,
        "dask.org/component": "scheduler",
    }
    assert {p["targetPort"] for p in service["ports"]} == {"tcp-comm", "http-dashboard"}

    assert worker["replicas"] >= 1
    (worker_container,) = worker["spec"]["containers"]
    args = worker_container["args"]
    assert args[:2] == ["dask", "worker"]
    assert "$(DASK_WORKER_NAME)" in args
    env = {e["name"]: e["value"] for e in worker_container["env"]}
    assert env["OMP_NUM_THREADS"] == "1"
    # --nthreads matches the CPU limit
    nthreads = args[args.index("--nthreads") + 1]
    assert str(worker_container["resources"]["limits"]["cpu"]) == nthreads
    assert sched_container["image"] == worker_container["image"]
    return sched_container["image"]


def test_daskjob():
    job = _k8s("daskjob.yaml")
    assert job["apiVersion"] == "kubernetes.dask.org/v1"
    assert job["kind"] == "DaskJob"
    name = job["metadata"]["name"]
    image = _check_dask_cluster_spec(job["spec"]["cluster"]["spec"], name)

    pod = job["spec"]["job"]["spec"]
    # the job pod is a plain Pod: its default restartPolicy (Always) would rerun the fit forever
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (container,) = pod["containers"]
    assert container["image"] == image
    args = container["args"]
    assert args[:2] == ["daskem", "fit"]
    # the operator injects DASK_SCHEDULER_ADDRESS, which --scheduler reads
    assert "--scheduler" not in args and "--scheduler-file" not in args
    assert "--checkpoint" in args
    # the job and the workers see the data at the same path
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    worker = job["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"][0]
    assert mounts <= {m["mountPath"] for m in worker["volumeMounts"]}
    assert args[2].startswith(tuple(m + "/" for m in mounts))


def test_daskjob_scheduler_address_comes_from_environment(monkeypatch):
    """The DaskJob relies on the CLI reading DASK_SCHEDULER_ADDRESS."""
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://daskem-fit-scheduler.default.svc.cluster.local:8786")
    args = _k8s("daskjob.yaml")["spec"]["job"]["spec"]["containers"][0]["args"]
    name, params = parse_cli(args)
    assert name == "fit"
    assert params["scheduler"] == "tcp://daskem-fit-scheduler.default.svc.cluster.local:8786"


def test_daskcluster():
    cluster = _k8s("daskcluster.yaml")
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    assert cluster["kind"] == "DaskCluster"
    _check_dask_cluster_spec(cluster["spec"], cluster["metadata"]["name"])


def test_helm_values():
    values = _k8s("values.yaml")
    assert values["scheduler"]["serviceType"] == "ClusterIP"
    for key in ("repository", "tag"):
        assert values["scheduler"]["image"][key] == values["worker"]["image"][key]
    # the chart runs this command; the image provides it (see the Dockerfile's aliases)
    assert values["worker"]["image"]["dask_worker"] in ("dask-worker", "dask-cuda-worker")
    assert values["worker"]["replicas"] >= 1
    assert values["worker"]["threads_per_worker"] == values["worker"]["resources"]["limits"]["cpu"]
    assert values["jupyter"]["enabled"] is False
    assert not values.get("webUI", {}).get("ingress", {}).get("enabled", False)


# ---------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------


def _dockerfile():
    return _read(os.path.join(DEPLOY, "docker", "Dockerfile"))


def test_dockerfile_base_image_is_pinned():
    froms = re.findall(r"^FROM\s+(\S+)", _dockerfile(), flags=re.M)
    assert froms
    for image in froms:
        name, _, tag = image.partition(":")
        assert name == "python"
        # an exact Python release (3.11.11), a slim variant, never "latest"
        assert re.fullmatch(r"3\.\d+\.\d+-slim(-\w+)?", tag), image


def test_dockerfile_copies_what_exists():
    """COPY sources exist at the repository root (the documented build context)
    and are not excluded by the Dockerfile's .dockerignore."""
    ignore = _read(os.path.join(DEPLOY, "docker", "Dockerfile.dockerignore")).split()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for line in _logical_lines(_dockerfile()):
        m = re.match(r"^COPY\s+(?!--from)(.*)$", line)
        if not m:
            continue
        *sources, _dest = m.group(1).split()
        for src in sources:
            assert os.path.exists(os.path.join(REPO, src)), src
            assert src.rstrip("/") in allowed, f"{src} is excluded by Dockerfile.dockerignore"
    # pip install . needs these
    assert {"pyproject.toml", "README.md", "daskem"} <= allowed


def test_dockerfile_sets_single_threaded_blas_and_non_root_user():
    text = _dockerfile()
    for var in ("OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", "MKL_NUM_THREADS=1"):
        assert var in text
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")


def test_dockerfile_aliases_run():
    """The dask-scheduler / dask-worker aliases written by the Dockerfile are valid sh."""
    m = re.search(r"printf '([^']*)' > /usr/local/bin/dask-worker", _dockerfile())
    script = m.group(1).replace("\\n", "\n")
    assert script.startswith("#!/bin/sh\n")
    out = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------------------
# Slurm
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHELL_FILES, ids=_rel)
def test_shell_syntax(path):
    out = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_sbatch_uses_the_scheduler_file_pattern():
    path = os.path.join(DEPLOY, "slurm", "daskem_fit.sbatch")
    text = _read(path)
    assert text.startswith("#!/bin/bash\n")
    assert re.search(r"^#SBATCH --nodes=\d+", text, flags=re.M)
    lines = _logical_lines(text)
    sched = [line for line in lines if line.startswith("dask scheduler ")]
    workers = [line for line in lines if line.startswith("srun ") and " dask worker " in line]
    fits = [line for line in lines if line.startswith("daskem fit ")]
    assert len(sched) == len(workers) == len(fits) == 1
    for line in sched + workers + fits:
        assert '--scheduler-file "$SCHEDULER_FILE"' in line, line
    assert sched[0].rstrip().endswith("&") and workers[0].rstrip().endswith("&")
    assert "--nthreads" in workers[0]
    assert "trap cleanup EXIT" in text  # scheduler and workers never outlive the job


def test_slurm_cluster_example_with_a_stand_in_jobqueue(tmp_path):
    """Run slurm_cluster.py end to end, with dask_jobqueue replaced by a
    LocalCluster that accepts exactly the keywords of dask-jobqueue 0.9's
    SLURMCluster that the example uses (dask-jobqueue is not a dependency)."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "dask_jobqueue.py").write_text(textwrap.dedent('''
        from distributed import LocalCluster

        class SLURMCluster(LocalCluster):
            def __init__(self, *, queue=None, account=None, cores=None, memory=None,
                         processes=None, walltime=None, interface=None, local_directory=None,
                         job_script_prologue=None, scheduler_options=None, job_extra_directives=None,
                         log_directory=None, name=None, n_workers=0):
                assert cores and memory and processes == 1
                self._cores = cores
                super().__init__(n_workers=0, threads_per_worker=cores, processes=False,
                                 protocol="tcp://", host="127.0.0.1", dashboard_address="127.0.0.1:0")

            def scale(self, n=None, jobs=0, memory=None, cores=None):
                return super().scale(jobs or n)

            def job_script(self):
                return "#!/usr/bin/env bash\\n#SBATCH -n 1\\n#SBATCH --cpus-per-task=%d" % self._cores
    '''))
    import numpy as np

    data = tmp_path / "x.npy"
    rng = np.random.default_rng(0)
    np.save(data, np.vstack([rng.normal(0, 1, (300, 2)), rng.normal(6, 1, (300, 2))]))
    model = tmp_path / "model.npz"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), REPO]))
    out = subprocess.run(
        [sys.executable, os.path.join(DEPLOY, "slurm", "slurm_cluster.py"), str(data),
         "--n-components", "2", "--jobs", "2", "--cores", "1", "--memory", "1GiB",
         "--out", str(model)],
        capture_output=True, text=True, env=env, timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "#SBATCH" in out.stdout
    assert "converged=True" in out.stdout
    import daskem

    gm = daskem.load(str(model))
    assert gm.means_.shape == (2, 2)


def test_slurm_cluster_example_without_jobqueue(tmp_path):
    """Without dask-jobqueue the example says what to install (exit 1), not a traceback."""
    code = textwrap.dedent(f'''
        import sys, runpy
        sys.modules["dask_jobqueue"] = None   # makes "import dask_jobqueue" fail
        sys.argv = ["slurm_cluster.py", "data.zarr", "--out", "m.npz"]
        runpy.run_path({os.path.join(DEPLOY, "slurm", "slurm_cluster.py")!r}, run_name="__main__")
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 1
    assert "pip install dask-jobqueue" in out.stderr
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------


def test_readme_links_and_advice():
    text = _read(os.path.join(DEPLOY, "README.md"))
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in target:
            assert os.path.exists(os.path.join(DEPLOY, target)), target
    for phrase in ("128 MiB", "OMP_NUM_THREADS", "distributed.comm.tls", "Security",
                   "8786", "8787", "no-workers-timeout"):
        assert phrase in text, phrase
    for path in re.findall(r"`((?:examples|deploy)/[\w./-]+)`", text):
        assert os.path.exists(os.path.join(REPO, path)), path
