"""The real TensorBoard server, pointed at a tiny run, serves every tab the README promises.

One module-scoped tiny run (256 training images, 2 epochs, a 16-unit LSTM) is
written, `python -m tensorboard.main` is started on 127.0.0.1 at a free port,
and its HTTP API (the same one the web page calls) is asked which runs,
plugins and tags it serves. The server is always stopped, even when a test
fails.
"""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from lstm_mnist.config import Config
from lstm_mnist.gates import lstm_layers

STEPS_PER_EPOCH = 4  # 256 images / batch 64
GATES = ("input", "forget", "candidate", "output")  # the last part of every per-gate tag (lstm_cell.Gates)
EPOCHS = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, train_offline):
    log_dir = tmp_path_factory.mktemp("tb-logs")
    config = Config(epochs=EPOCHS, train_examples=256, val_size=300, test_examples=128, batch_size=64, units=16,
                    log_every_steps=1, log_dir=str(log_dir))
    return log_dir, train_offline(config)


class TensorBoardServer:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str):
        with urllib.request.urlopen(self.base + path, timeout=30) as response:
            body = response.read()
        return json.loads(body) if response.headers.get_content_type() == "application/json" else body

    def post(self, path: str, payload: dict):
        request = urllib.request.Request(self.base + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tiny_run):
    log_dir, result = tiny_run
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir),
                                "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        tensorboard = TensorBoardServer(port)
        test_run = f"{result.run_dir.name}/test"
        deadline = time.time() + 90
        while True:  # until the server answers and has read the last event file of the run
            try:
                if test_run in tensorboard.get("/data/plugin/scalars/tags"):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"TensorBoard did not serve {test_run} within 90 s: {process.communicate()[0][-2000:]}")
            time.sleep(0.5)
        yield tensorboard
    finally:
        process.terminate()
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def names(result):
    run = result.run_dir.name
    return run, f"{run}/train", f"{run}/validation", f"{run}/test"


def test_every_tab_is_enabled_and_every_run_listed(server, tiny_run):
    _, result = tiny_run
    assert set(names(result)) <= set(server.get("/data/runs"))
    plugins = server.get("/data/plugins_listing")
    for tab in ("scalars", "histograms", "distributions", "images", "graphs", "text", "hparams"):
        assert plugins[tab]["enabled"], f"TensorBoard's {tab} tab has no data"


def test_scalars(server, tiny_run):
    _, result = tiny_run
    _, train, validation, test = names(result)
    tags = server.get("/data/plugin/scalars/tags")
    assert {"epoch/loss", "epoch/accuracy", "step/loss", "step/accuracy", "optimizer/learning_rate",
            "optimizer/gradient_norm", "throughput/examples_per_second"} <= set(tags[train])
    assert {"epoch/loss", "epoch/accuracy"} <= set(tags[validation])
    assert {"final/loss", "final/accuracy"} <= set(tags[test])
    points = server.get(f"/data/plugin/scalars/scalars?run={test}&tag=final/accuracy")
    assert points[-1][2] == pytest.approx(result.metrics["test_accuracy"])  # [wall_time, step, value]
    throughput = server.get(f"/data/plugin/scalars/scalars?run={train}&tag=throughput/examples_per_second")
    assert [step for _, step, _ in throughput] == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    assert all(value > 0 for _, _, value in throughput)


def test_histograms_and_distributions(server, tiny_run):
    _, result = tiny_run
    _, train, validation, _ = names(result)
    model = result.model
    expected = {f"weights/{variable.path}" for variable in model.weights}
    expected |= {f"gradients/{variable.path}" for variable in model.trainable_variables}
    (lstm,) = lstm_layers(model)
    for variable in (lstm.cell.kernel, lstm.cell.recurrent_kernel, lstm.cell.bias):
        expected |= {f"{kind}/{variable.path}/{gate}" for kind in ("weights_by_gate", "gradients_by_gate")
                     for gate in GATES}
    for plugin in ("histograms", "distributions"):
        tags = server.get(f"/data/plugin/{plugin}/tags")
        assert set(tags[train]) == expected, plugin
        assert set(tags[validation]) == {f"gate_activations/lstm_1/{gate}" for gate in GATES}, plugin
    forget = server.get(f"/data/plugin/histograms/histograms?run={validation}&tag=gate_activations/lstm_1/forget")
    assert [step for _, step, _ in forget] == [STEPS_PER_EPOCH * epoch for epoch in range(1, EPOCHS + 1)]
    buckets = forget[-1][2]  # [[left, right, count], ...]
    assert min(left for left, _, _ in buckets) >= 0.0 and max(right for _, right, _ in buckets) <= 1.0  # a sigmoid


def test_images(server, tiny_run):
    _, result = tiny_run
    _, train, validation, _ = names(result)
    tags = server.get("/data/plugin/images/tags")
    assert set(tags[train]) == {"inputs/as_timesteps"}
    assert set(tags[validation]) == {"validation/confusion_matrix", "validation/misclassified",
                                     "validation/reading_row_by_row"}
    for tag in tags[validation]:
        images = server.get(f"/data/plugin/images/images?run={validation}&tag={tag}")
        assert [image["step"] for image in images] == [STEPS_PER_EPOCH * e for e in range(1, EPOCHS + 1)], tag
        png = server.get(f"/data/plugin/images/individualImage?{images[-1]['query']}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n", tag


def test_graphs(server, tiny_run):
    _, result = tiny_run
    _, train, _, _ = names(result)
    info = server.get("/data/plugin/graphs/info")[train]["tags"]
    assert info["train_step"]["op_graph"], "the traced training step is missing"
    assert info["keras"]["conceptual_graph"], "the Keras layer graph is missing"
    layer_graph = server.get(f"/data/plugin/graphs/graph?run={train}&tag=keras&conceptual=true").decode()
    for layer in result.model.layers:
        assert f'name: "{result.model.name}/{layer.name}"' in layer_graph
    op_graph = server.get(f"/data/plugin/graphs/graph?run={train}&tag=train_step").decode()
    assert "lstm_1" in op_graph, op_graph[:500]


def test_text(server, tiny_run):
    _, result = tiny_run
    _, train, _, _ = names(result)
    assert set(server.get("/data/plugin/text/tags")[train]) == {"run/config", "run/model_summary"}
    config_text = server.get(f"/data/plugin/text/text?run={train}&tag=run/config")[-1]["text"]
    assert "<code>units</code>" in config_text and "<code>16</code>" in config_text
    summary_text = server.get(f"/data/plugin/text/text?run={train}&tag=run/model_summary")[-1]["text"]
    assert "lstm_1 (LSTM)" in summary_text


def test_hparams(server, tiny_run):
    _, result = tiny_run
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {info["name"] for info in experiment["hparamInfos"]}
    assert {"cell", "units", "layers", "learning_rate", "batch_size", "bidirectional"} <= hparams
    metrics = {(info["name"]["group"], info["name"]["tag"]) for info in experiment["metricInfos"]}
    assert ("test", "final/accuracy") in metrics and ("validation", "epoch/accuracy") in metrics
    groups = server.post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                  "STATUS_RUNNING"],
        "colParams": [], "startIndex": 0, "sliceSize": 10})["sessionGroups"]
    (group,) = [g for g in groups if g["name"] == result.run_dir.name]
    assert group["hparams"]["units"] == 16 and group["hparams"]["cell"] == "lstm"
    final = {(m["name"]["group"], m["name"]["tag"]): m["value"] for m in group["metricValues"]}
    assert final[("test", "final/accuracy")] == pytest.approx(result.metrics["test_accuracy"])
    assert final[("validation", "epoch/accuracy")] == pytest.approx(result.metrics["val_accuracy"])

