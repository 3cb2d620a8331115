"""A training job on the training image, through the service API, against the real hub and Docker."""

import json
import shlex

import pytest

from tests.hubtools import SERVICE, ServiceClient, login_session, wait_for

pytestmark = pytest.mark.integration

TRAINING = "labdeck/training:latest"

# Least squares with torch, checked against numpy, written to the job's output folder.
PROGRAM = """
import json, os
import numpy, torch

a = torch.tensor([[2.0, 1.0], [1.0, 3.0], [0.0, 1.0]], dtype=torch.float64)
b = torch.tensor([[3.0], [5.0], [1.0]], dtype=torch.float64)
solution = torch.linalg.lstsq(a, b).solution.squeeze(1)
reference = numpy.linalg.lstsq(a.numpy(), b.numpy().ravel(), rcond=None)[0]
result = {"torch": torch.__version__, "solution": solution.tolist(),
          "agrees_with_numpy": bool(numpy.allclose(solution.numpy(), reference))}
with open(os.path.join(os.environ["LABDECK_OUTPUT_DIR"], "result.json"), "w") as f:
    json.dump(result, f)
print("wrote", result)
"""


@pytest.fixture(scope="module")
def training_image(docker_client, built_images):
    return docker_client.images.get(TRAINING)


def test_training_job_runs_torch_and_writes_its_result(hub, make_user, training_image):
    user = make_user()
    api = ServiceClient(hub, user.name)
    r = api("POST", "/jobs", json={
        "name": "least squares", "image": TRAINING, "region": "default", "cpu": 1, "memory_gb": 2,
        "gpus": 0, "command": f"python -c {shlex.quote(PROGRAM)}",
    })
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    job = wait_for(lambda: (j := api("GET", f"/jobs/{job_id}").json())["state"] == "ended" and j,
                   180, f"job {job_id} to end")
    assert job["end_reason"] == "succeeded" and job["exit_code"] == 0, job

    s = login_session(hub, user.name, user.password)
    download = s.get(f"{hub.url}{SERVICE}jobs/{job_id}/files/result.json?download=1", timeout=30)
    assert download.status_code == 200, download.text
    result = json.loads(download.content)
    assert result["torch"] == "2.13.0+cpu" and result["agrees_with_numpy"] is True
    # the normal equations [[5, 5], [5, 11]] x = [11, 19] give x = (13/15, 4/3)
    assert result["solution"] == pytest.approx([13 / 15, 4 / 3], abs=1e-9)
