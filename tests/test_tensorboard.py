"""The real TensorBoard server, pointed at a tiny run, serves every tab the README promises.

One module-scoped tiny run (256 training images, 2 epochs, a 16-unit LSTM) is
written, `python -m tensorboard.main` is started on 127.0.0.1 at a free port,
and its HTTP API (the same one the web page calls) is asked which runs,
plugins and tags it serves. The server is always stopped, even when a test
fails.
"""

import functools
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
from lstm_mnist.summaries import TRAIN_STEP_GRAPH

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
    assert info[TRAIN_STEP_GRAPH]["op_graph"], "the traced training step is missing"
    assert info["keras"]["conceptual_graph"], "the Keras layer graph is missing"
    layer_graph = server.get(f"/data/plugin/graphs/graph?run={train}&tag=keras&conceptual=true").decode()
    for layer in result.model.layers:
        assert f'name: "{result.model.name}/{layer.name}"' in layer_graph
    op_graph = server.get(f"/data/plugin/graphs/graph?run={train}&tag={TRAIN_STEP_GRAPH}").decode()
    assert "lstm_1" in op_graph, op_graph[:500]


def compare_tag_names(a: str, b: str) -> int:
    """TensorBoard's frontend order of tag names (its `compareTagNames`): runs of digits compare as numbers,
    and '/', '_' and digits come before every other character."""
    def is_break(char):
        return char in "/_" or char.isdigit()

    i = j = 0
    while True:
        if i == len(a):
            return 0 if j == len(b) else -1
        if j == len(b):
            return 1
        if a[i].isdigit() and b[j].isdigit():
            start_a, start_b = i, j
            while i < len(a) and a[i].isdigit():
                i += 1
            while j < len(b) and b[j].isdigit():
                j += 1
            if int(a[start_a:i]) != int(b[start_b:j]):
                return -1 if int(a[start_a:i]) < int(b[start_b:j]) else 1
            continue
        if is_break(a[i]) != is_break(b[j]):
            return -1 if is_break(a[i]) else 1
        if not is_break(a[i]) and a[i] != b[j]:
            return -1 if a[i] < b[j] else 1
        i, j = i + 1, j + 1


def test_the_graphs_tab_opens_on_a_graph_it_can_draw(server, tiny_run):
    """The GRAPHS page opens a run's first graph ("Default", the run's own graph, if any, else the first tag
    in its order) as an op graph. A tag with only a conceptual graph (Keras's `keras`) is answered 404, and
    the page then opens on "Malformed GraphDef"."""
    _, result = tiny_run
    _, train, _, _ = names(result)
    info = server.get("/data/plugin/graphs/info")[train]
    tags = sorted(info["tags"], key=functools.cmp_to_key(compare_tag_names))
    assert not info["run_graph"] and tags[0] == TRAIN_STEP_GRAPH
    graph = server.get(f"/data/plugin/graphs/graph?run={train}&tag={tags[0]}&conceptual=false").decode()
    assert 'op: "' in graph  # a GraphDef of operations, in text form
    with pytest.raises(urllib.error.HTTPError, match="404"):  # what the page met before: keras as an op graph
        server.get(f"/data/plugin/graphs/graph?run={train}&tag=keras&conceptual=false")


def test_text(server, tiny_run):
    _, result = tiny_run
    _, train, _, test = names(result)
    tags = server.get("/data/plugin/text/tags")
    assert set(tags[train]) == {"run/config", "run/model_summary"}
    assert set(tags[test]) == {"final/result"}
    sentence = server.get(f"/data/plugin/text/text?run={test}&tag=final/result")[-1]["text"]
    accuracy = result.metrics["test_accuracy"]
    assert f"test accuracy <strong>{accuracy:.2%}</strong> ({round((1 - accuracy) * 128)} wrong of 128" in sentence
    config_text = server.get(f"/data/plugin/text/text?run={train}&tag=run/config")[-1]["text"]
    assert "<code>units</code>" in config_text and "<code>16</code>" in config_text
    summary_text = server.get(f"/data/plugin/text/text?run={train}&tag=run/model_summary")[-1]["text"]
    assert "lstm_1 (LSTM)" in summary_text


def test_hparams(server, tiny_run):
    _, result = tiny_run
    # The frontend's request: it ticks the first five settings and the first five metrics, in this order.
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": "", "hparamsLimit": 1000})
    shown = [info["displayName"] for info in experiment["hparamInfos"]]
    assert shown[:5] == ["cell", "units", "layers", "epochs", "learning_rate"]
    assert {"batch_size", "bidirectional", "train_examples", "dropout"} <= set(shown)
    metrics = [(info["name"]["group"], info["name"]["tag"]) for info in experiment["metricInfos"]]
    assert metrics[:2] == [("test", "final/accuracy"), ("validation", "epoch/accuracy")]
    name = {info["displayName"]: info["name"] for info in experiment["hparamInfos"]}
    groups = server.post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                  "STATUS_RUNNING"],
        "colParams": [], "startIndex": 0, "sliceSize": 10})["sessionGroups"]
    (group,) = [g for g in groups if g["name"] == result.run_dir.name]
    assert group["hparams"][name["units"]] == 16 and group["hparams"][name["cell"]] == "lstm"
    final = {(m["name"]["group"], m["name"]["tag"]): m["value"] for m in group["metricValues"]}
    assert final[("test", "final/accuracy")] == pytest.approx(result.metrics["test_accuracy"])
    assert final[("validation", "epoch/accuracy")] == pytest.approx(result.metrics["val_accuracy"])

