"""The desktop and training images as the platform runs them: created through the one container
recipe (cap_drop ALL plus the image's label, no-new-privileges, limits) against the real Docker
engine, their commands run by the debug image's entrypoint as jovyan.

conftest's built_images fixture runs images/build.py once, which builds both. Every container here
carries the label labdeck.test=environment-images and its own platform instance (so the hub tests'
clean-up leaves it alone), and is removed by this module's finalizer.
"""

import json
import shlex

import pytest
from tests.platform_containers import PlatformContainers
from tests.test_images import load_build_module

pytestmark = pytest.mark.integration

DESKTOP = "labdeck/desktop:latest"
TRAINING = "labdeck/training:latest"
DEBUG_CAPABILITIES = "AUDIT_WRITE,CHOWN,SETGID,SETUID,SYS_CHROOT"  # images/debug/Dockerfile
INSTANCE = "labdeck-environment-image-test"

GL_TITLE = "labdeck gl"
GL_BACKGROUND = (26, 26, 51)  # glClearColor(0.1, 0.1, 0.2)
# A coloured triangle (red, green and blue corners) in a 400x300 window titled GL_TITLE, through
# freeglut. With --probe it prints the renderer and the colours of the first frame at the window's
# centre and in a corner, then exits. Also compiled and run on the desktop by tests/browser/test_desktop.py.
GL_TRIANGLE_C = r"""
#include <GL/glut.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int probe;

static void pixel(int x, int y, const char *what) {
    unsigned char rgb[3];
    glReadPixels(x, y, 1, 1, GL_RGB, GL_UNSIGNED_BYTE, rgb);
    printf("%s %d %d %d\n", what, rgb[0], rgb[1], rgb[2]);
}

static void draw(void) {
    glClearColor(0.1f, 0.1f, 0.2f, 1.0f);
    glClear(GL_COLOR_BUFFER_BIT);
    glBegin(GL_TRIANGLES);
    glColor3f(1.0f, 0.0f, 0.0f); glVertex2f(-0.9f, -0.9f);
    glColor3f(0.0f, 1.0f, 0.0f); glVertex2f(0.9f, -0.9f);
    glColor3f(0.0f, 0.0f, 1.0f); glVertex2f(0.0f, 0.9f);
    glEnd();
    if (probe) {
        int w = glutGet(GLUT_WINDOW_WIDTH), h = glutGet(GLUT_WINDOW_HEIGHT);
        glFinish();
        glReadBuffer(GL_BACK);
        printf("renderer %s\n", (const char *)glGetString(GL_RENDERER));
        pixel(w / 2, h / 2, "centre");
        pixel(2, h - 3, "corner");
        fflush(stdout);
        exit(0);
    }
    glutSwapBuffers();
}

int main(int argc, char **argv) {
    glutInit(&argc, argv);
    probe = argc > 1 && strcmp(argv[1], "--probe") == 0;
    glutInitDisplayMode(GLUT_DOUBLE | GLUT_RGB);
    glutInitWindowSize(400, 300);
    glutInitWindowPosition(200, 150);
    glutCreateWindow("labdeck gl");
    glutDisplayFunc(draw);
    glutMainLoop();
    return 0;
}
"""


def gl_build_script(directory: str = "/tmp/gl") -> str:
    """Shell lines that write GL_TRIANGLE_C to DIRECTORY/triangle.c and build DIRECTORY/triangle."""
    return (f"mkdir -p {directory} && cd {directory} && printf '%s' {shlex.quote(GL_TRIANGLE_C)} > triangle.c"
            " && gcc -Wall -O2 -o triangle triangle.c -lglut -lGLU -lGL")


def start_xvnc(display: int) -> str:
    """Shell lines that start TigerVNC's X server (no VNC port) and wait for its socket."""
    return (f"Xtigervnc :{display} -rfbport -1 -SecurityTypes None -geometry 800x600 >/tmp/xvnc.log 2>&1 &"
            f" for i in $(seq 100); do [ -S /tmp/.X11-unix/X{display} ] && break; sleep 0.1; done;"
            f" export DISPLAY=:{display}")


@pytest.fixture(scope="module")
def desktop_image(docker_client, built_images):
    return docker_client.images.get(DESKTOP)


@pytest.fixture(scope="module")
def training_image(docker_client, built_images):
    return docker_client.images.get(TRAINING)


@pytest.fixture(scope="module")
def run_hardened(docker_client, request):
    """Run a bash script in an image as a platform container; returns (container, exit code, output).

    The image's own entrypoint runs it (debug-entrypoint's command mode: as jovyan).
    """
    containers = PlatformContainers(docker_client, INSTANCE, "environment-images")
    request.addfinalizer(containers.remove_all)

    def run(image, script: str, memory_mb: int = 1024, timeout: int = 300):
        container = containers.start(image, kind="notebook", id_prefix="img", memory_mb=memory_mb,
                                     command=["bash", "-euo", "pipefail", "-c", script])
        code = container.wait(timeout=timeout)["StatusCode"]
        return container, code, container.logs().decode(errors="replace").strip()

    return run


def run_ok(run_hardened, image, script: str, **kwargs) -> str:
    _, code, output = run_hardened(image, script, **kwargs)
    assert code == 0, f"exit {code}:\n{output}"
    return output


# ---------------------------------------------------------------- both


@pytest.mark.parametrize("name", ["desktop", "training"])
def test_labels_and_parent(docker_client, built_images, name):
    image = docker_client.images.get(f"labdeck/{name}:latest")
    debug = docker_client.images.get("labdeck/debug:latest")
    labels = image.labels
    assert labels["labdeck.description"].strip()
    assert labels["labdeck.kinds"] == "notebook,debug,job"
    assert labels["labdeck.capabilities"] == DEBUG_CAPABILITIES
    # built on the current debug image, with its entrypoint (command mode for notebook servers)
    debug_layers = debug.attrs["RootFS"]["Layers"]
    assert image.attrs["RootFS"]["Layers"][:len(debug_layers)] == debug_layers
    assert image.attrs["Config"]["Entrypoint"] == debug.attrs["Config"]["Entrypoint"]
    build = load_build_module()
    spec = next(i for i in build.user_images(build.base_image()) if i.name == name)
    assert spec.parent.name == "debug" and labels["labdeck.inputs"] == spec.digest


@pytest.mark.parametrize("name", ["desktop", "training"])
def test_runs_hardened_as_jovyan_with_a_consistent_venv(docker_client, built_images, run_hardened, name):
    image = docker_client.images.get(f"labdeck/{name}:latest")
    container, code, output = run_hardened(image, "\n".join([
        "id -u; id -gn; grep CapEff /proc/self/status; command -v python",
        "pip check",
        # each distribution once: what the image added replaced the parent's copies cleanly
        "python -c 'import collections, importlib.metadata as m",
        'names = collections.Counter(d.metadata["Name"].lower() for d in m.distributions())',
        'print("duplicates:", sorted(n for n, c in names.items() if c > 1))\'',
    ]))
    assert code == 0, output
    assert output.splitlines() == [
        "1000", "users", "CapEff:\t0000000000000000", "/opt/labdeck/venv/bin/python",
        "No broken requirements found.", "duplicates: []",
    ]
    host_config = container.attrs["HostConfig"]
    assert host_config["CapDrop"] == ["ALL"] and sorted(host_config["CapAdd"]) == DEBUG_CAPABILITIES.split(",")
    assert host_config["SecurityOpt"] == ["no-new-privileges:true"]


# ---------------------------------------------------------------- training

TRAINING_SCRIPT = """
import numpy, pandas, sklearn, torch
from sklearn.linear_model import LinearRegression

print(torch.__version__, torch.cuda.is_available())
print(numpy.__version__.split(".")[0], pandas.__version__.split(".")[0], sklearn.__version__.split(".")[0])
x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
(x @ x).sum().backward()
print(x.grad.tolist())
net = torch.nn.Linear(1, 1)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
data = torch.linspace(-1, 1, 32).unsqueeze(1)
for _ in range(300):
    opt.zero_grad()
    loss = ((net(data) - (2 * data + 0.5)) ** 2).mean()
    loss.backward()
    opt.step()
print(round(net.weight.item(), 2), round(net.bias.item(), 2))
frame = pandas.DataFrame({"x": numpy.arange(5.0), "y": 3 * numpy.arange(5.0) + 1})
fit = LinearRegression().fit(frame[["x"]], frame["y"])
print(round(float(fit.coef_[0]), 6), round(float(fit.intercept_), 6))
"""


def test_training_stack_imports_and_computes(run_hardened, training_image):
    output = run_ok(run_hardened, training_image, f"python -c {shlex.quote(TRAINING_SCRIPT)}",
                    memory_mb=2048)
    assert output.splitlines() == [
        "2.13.0+cpu False",
        "2 3 1",
        "[[7.0, 11.0], [9.0, 13.0]]",  # d/dX sum(X @ X) = 1 X^T + X^T 1
        "2.0 0.5",  # a linear layer learnt y = 2x + 0.5
        "3.0 1.0",
    ]


# ---------------------------------------------------------------- desktop


def test_desktop_has_tigervnc_and_the_remote_desktop_proxy(run_hardened, desktop_image):
    output = run_ok(run_hardened, desktop_image, "\n".join([
        "Xtigervnc -version 2>&1 | grep -o '^Xvnc TigerVNC [0-9.]*'",
        "command -v xfce4-session xfce4-terminal dbus-launch",
        "jupyter server extension list 2>&1 | grep -o 'jupyter_remote_desktop_proxy.*enabled' | head -1",
        "python - <<'EOF'",
        "import json",
        "from importlib.metadata import entry_points",
        '(ep,) = entry_points(group="jupyter_serverproxy_servers", name="desktop-websockify")',
        "config = ep.load()()",
        'print(json.dumps({k: config[k] for k in ("unix_socket", "raw_socket_proxy", "launcher_entry")}))',
        'print(config["command"][-1])',
        "EOF",
    ]))
    lines = output.splitlines()
    assert lines[0].startswith("Xvnc TigerVNC 1.")
    assert lines[1:4] == ["/usr/bin/xfce4-session", "/usr/bin/xfce4-terminal", "/usr/bin/dbus-launch"]
    assert lines[4].startswith("jupyter_remote_desktop_proxy") and lines[4].endswith("enabled")
    # served at <server>/desktop/; jupyter-server-proxy relays its websocket to the VNC server's
    # unix socket itself (no websockify), and the VNC server listens on no TCP port
    assert json.loads(lines[5]) == {"unix_socket": True, "raw_socket_proxy": True,
                                    "launcher_entry": {"title": "Desktop", "path_info": "desktop"}}
    command = lines[6]
    assert "/usr/bin/vncserver -rfbunixpath '{unix_socket}' -rfbport -1 " in command
    assert "share/xstartup" in command and "-SecurityTypes None" in command


def test_gl_program_compiles_and_renders_with_mesa_under_xvnc(run_hardened, desktop_image):
    output = run_ok(run_hardened, desktop_image, "\n".join([
        start_xvnc(7),
        "glxinfo -B | grep -E '^(direct rendering|OpenGL renderer string):'",
        gl_build_script(),
        "./triangle --probe",
        "./triangle & pid=$!",
        f"timeout 30 xdotool search --sync --name '^{GL_TITLE}$' >/dev/null",
        f"xwininfo -name '{GL_TITLE}' | grep -E '^ +(Width|Height):'",
        "kill $pid",
    ]))
    lines = [line.strip() for line in output.splitlines()]
    assert lines[0] == "direct rendering: Yes"
    assert lines[1].startswith("OpenGL renderer string: llvmpipe")
    assert lines[2].startswith("renderer llvmpipe")
    centre = tuple(int(v) for v in lines[3].split()[1:])
    corner = tuple(int(v) for v in lines[4].split()[1:])
    assert corner == GL_BACKGROUND
    assert centre != GL_BACKGROUND and min(centre) > 40  # a mix of the three corners' colours
    assert lines[5:] == ["Width: 400", "Height: 300"]  # the window exists, titled GL_TITLE
