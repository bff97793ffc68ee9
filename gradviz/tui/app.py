"""GradvizApp: PyTorch's backward, one node at a time, in the terminal.

Torch work (loading a scenario, stepping, the optimizer) runs in thread workers,
one at a time; they hand plain data (summaries, reports) to the UI thread with
``call_from_thread``. Widgets never touch torch. The app module imports no torch
itself, so the first frame shows at once while torch loads in a worker.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Input, LoadingIndicator, Static

from gradviz.tui.graph_view import GROUP, GraphState, GraphView
from gradviz.tui.panels import ChecksPanel, GradFlow, Inspector, LossPlot, ParamsTable
from gradviz.tui.screens import HelpScreen, PickerScreen

if TYPE_CHECKING:
    from gradviz.core.session import Session

#: Graphs up to this many nodes are stepped visibly by `c`; bigger ones run flat out.
ANIMATE_UP_TO = 400
_FRAME = 1 / 30  # seconds between screen updates while continuing


@dataclass
class Progress:
    """What a worker learned from the engine, for the UI thread to show."""

    events: list[Any] = field(default_factory=list)
    pending: str | None = None
    incoming: tuple = ()
    ready: frozenset[str] = frozenset()
    finished: bool = False
    grads: dict[str, Any] = field(default_factory=dict)  # parameter name -> summary
    flow: dict[str, float] = field(default_factory=dict)  # parameter name -> mean |grad|
    nonfinite: str | None = None


class GradvizApp(App[None]):
    """The app; give it a scenario name or path, a ready Session, or neither (a picker)."""

    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live elsewhere
    TITLE = "gradviz"
    AUTO_FOCUS = "#graph"
    BINDINGS = [
        Binding("n,space", "step", "step", id="step"),
        Binding("c", "continue", "continue", id="continue"),
        Binding("o", "optimizer", "optimizer", id="optimizer"),
        Binding("t", "train", "train", id="train"),
        Binding("f", "forward", "forward", id="forward"),
        Binding("e", "export", "export", id="export"),
        Binding("slash", "find", "find", id="find"),
        Binding("m", "modules", "modules", id="modules"),
        Binding("escape", "stop", "stop", show=False, id="stop"),
        Binding("question_mark", "help", "help", id="help"),
        Binding("q", "quit", "quit", id="quit"),
    ]

    def __init__(self, scenario: str | None = None, *, weights: str | None = None,
                 session: Session | None = None, export_dir: str | Path = ".") -> None:
        super().__init__()
        self.scenario_ref = scenario
        self.weights = weights
        self.session = session
        self.export_dir = Path(export_dir)
        self.busy = ""  # what a worker is doing, "" when idle
        self.stop = threading.Event()
        self.state = GraphState()
        self.events: dict[str, Any] = {}
        self.incoming: tuple = ()
        self.flow: dict[str, float] = {}
        self.collapse_depth: int | None = None
        self.opened: set[str] = set()
        self.matches: list[str] = []
        self.error = ""
        self._enabled: tuple[bool, ...] = ()
        self._leaves: dict[str, Any] = {}

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield GraphView(id="graph")
            with Vertical(id="side"):
                yield Inspector(id="inspector")
                yield ParamsTable(id="params")
        with Horizontal(id="bottom"):
            yield LossPlot(id="loss")
            yield GradFlow(id="flow")
            yield ChecksPanel(id="checks")
        yield Input(placeholder="find: op, module or parameter name (enter: next)", id="find")
        yield Static(id="status")
        yield LoadingIndicator(id="loading")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#graph").border_title = "autograd graph (root at the top)"
        self.query_one("#inspector").border_title = "node"
        self.query_one("#params").border_title = "parameters and optimizer"
        self.query_one("#find").display = False
        self.show_status("loading…")
        if self.session is not None:
            self.start_session(self.session)
        elif self.scenario_ref is not None:
            self.load(self.scenario_ref)
        else:
            self.query_one("#loading").display = False
            from gradviz.core.catalog import builtin_scenarios

            choices = [(info.name, info.description) for info in builtin_scenarios()]
            self.push_screen(PickerScreen(choices), self.load)

    # ------------------------------------------------------------------ workers
    @work(thread=True, exclusive=True, group="engine")
    def load(self, ref: str) -> None:
        self.call_from_thread(self._set_busy, f"loading {ref}")
        try:
            from gradviz.core.scenario import load_scenario
            from gradviz.core.session import Session

            session = Session(load_scenario(ref, weights=self.weights))
            session.forward()
        except Exception as error:  # a user's scenario: show it, never crash
            self.call_from_thread(self.show_error, _one_line(error))
            self.call_from_thread(self._set_busy, "")
            return
        self.call_from_thread(self.start_session, session)

    @work(thread=True, exclusive=True, group="engine")
    def run_engine(self, what: str) -> None:
        """Every torch action goes through here, one at a time."""
        self.stop.clear()
        try:
            if what == "step":
                self._step(1)
            elif what == "continue":
                self._continue()
            elif what == "optimizer":
                report = self.session.optimizer_step()
                self.call_from_thread(self._show_update, report)
            elif what == "forward":
                self.session.forward()
                self.call_from_thread(self._show_new_graph)
            elif what == "train":
                self._train()
            elif what == "export":
                self._export()
        except Exception as error:
            if self.stop.is_set():  # the user pressed escape: the backward was aborted
                self.call_from_thread(self.notify, "stopped", title=what)
            else:
                node = getattr(error, "gradviz_node", None)
                self.call_from_thread(self.show_error, _one_line(error), node)
        finally:
            self.call_from_thread(self._set_busy, "")

    def _step(self, count: int) -> bool:
        """Run up to ``count`` nodes, then show them; False once backward is over."""
        session = self.session
        progress = Progress()
        for _ in range(count):
            event = session.step()
            if event is None:
                break
            self._describe(event, progress)
        self._finish(progress)
        self.call_from_thread(self._show_progress, progress)
        return not progress.finished

    def _continue(self) -> None:
        animate = len(self.session.stepper) <= ANIMATE_UP_TO
        progress = Progress()
        last = time.perf_counter()
        while not self.stop.is_set():
            event = self.session.step()
            if event is None:
                break
            self._describe(event, progress)
            if animate:
                time.sleep(_FRAME)
            if animate or time.perf_counter() - last > _FRAME:
                self._finish(progress)
                self.call_from_thread(self._show_progress, progress)
                progress, last = Progress(), time.perf_counter()
        self._finish(progress)
        self.call_from_thread(self._show_progress, progress)

    def _train(self) -> None:
        self.session.forward()
        self.call_from_thread(self._show_new_graph)
        self.call_from_thread(self._set_busy, "training: backward")
        self.session.run_backward()
        progress = Progress(events=list(self.session.stepper.events))
        for event in progress.events:
            self._describe(event, progress, collect=False)
        self._finish(progress)
        self.call_from_thread(self._show_progress, progress)
        if self.session.watch is not None:
            report = self.session.optimizer_step()
            self.call_from_thread(self._show_update, report)

    def _export(self) -> None:
        from gradviz.core.export import to_dot

        name = f"{self.session.scenario.name}-{self.session.iteration}.dot"
        path = self.export_dir / name
        to_dot(self.session.graph, path)
        self.call_from_thread(self.notify, f"exported the graph to {path}", title="export")

    def _describe(self, event: Any, progress: Progress, *, collect: bool = True) -> None:
        """Read what the UI shows of ``event`` here, in the worker, where torch may run."""
        if collect:
            progress.events.append(event)
        event.summarize()
        names = self.session.graph.nodes[event.node].get("names") or ()
        for name in names:
            tensor = self._leaves.get(name)
            if tensor is not None and tensor.grad is not None and event.param_grad is not None:
                progress.grads[name] = event.param_grad
                progress.flow[name] = float(tensor.grad.detach().abs().float().mean())

    def _finish(self, progress: Progress) -> None:
        stepper = self.session.stepper
        progress.pending = stepper.pending
        progress.incoming = stepper.pending_grad_outputs
        progress.ready = frozenset(stepper.ready)
        progress.finished = stepper.done
        origin = stepper.first_nonfinite
        progress.nonfinite = None if origin is None else origin.node

    # ------------------------------------------------------------------ UI thread
    def start_session(self, session: Session) -> None:
        self.session = session
        self._leaves = session.scenario.named_leaves()  # read for every event: once
        self.query_one("#loading").display = False
        params = []
        for name, tensor in self._leaves.items():
            params.append((name, tuple(tensor.shape), not tensor.requires_grad))
        self.query_one(ParamsTable).show_params(params)
        if session.watch is not None:
            self.query_one("#params").border_title = (
                f"parameters and optimizer: {type(session.watch.optimizer).__name__} "
                + _settings(session.watch.optimizer.param_groups[0]))
        self._show_new_graph()
        self._set_busy("")

    def _show_new_graph(self) -> None:
        graph = self.session.graph
        self.state = GraphState(ready={k for k in graph if graph.in_degree(k) == 0})
        self.events = {}
        self.incoming = ()
        self.flow = {}
        self.error = ""
        if self.collapse_depth is None and graph.number_of_nodes() > 2000:
            self.collapse_depth = 1  # thousands of rows: start with the modules folded
        view = self.query_one(GraphView)
        view.follow = True
        view.show_graph(graph, self.collapse_depth, frozenset(self.opened))
        view.show_state(self.state)
        self.query_one(ParamsTable).clear_grads()
        self.query_one(LossPlot).show_losses(self.session.losses)
        self.query_one(GradFlow).show_flow([])
        self._show_checks()
        root = graph.graph["roots"][0]
        self._inspect(root)
        self.show_status()

    def _show_progress(self, progress: Progress) -> None:
        changed = {event.node for event in progress.events}
        changed |= self.state.ready ^ set(progress.ready)
        changed |= {self.state.pending, progress.pending, progress.nonfinite} - {None}
        for event in progress.events:
            self.events[event.node] = event
            self.state.done.add(event.node)
            sent = [s.norm for s in (*event.grad_inputs, event.param_grad) if s is not None]
            if sent:
                self.state.norms[event.node] = max(sent)
        self.state.pending = progress.pending
        self.state.ready = set(progress.ready)
        if progress.nonfinite:
            self.state.broken = progress.nonfinite
        self.incoming = progress.incoming
        params = self.query_one(ParamsTable)
        for name, summary in progress.grads.items():
            params.show_grad(name, summary)
        if progress.flow:
            self.flow.update(progress.flow)
            order = list(self._leaves)
            self.query_one(GradFlow).show_flow(
                [(name, self.flow[name]) for name in order if name in self.flow])
        self.query_one(GraphView).show_state(self.state, changed)
        if progress.finished:
            self._show_checks()
        view = self.query_one(GraphView)
        if view.follow:
            self._inspect(progress.pending or (progress.events[-1].node if progress.events else None))
        self.show_status()

    def _show_update(self, report: Any) -> None:
        self.query_one(ParamsTable).show_update(report)
        moved = len(report.updated)
        self.notify(f"{report.optimizer} step {report.step}: {moved} of {len(report.params)} "
                    "parameters updated", title="optimizer")
        self.show_status()

    def _show_checks(self) -> None:
        self.query_one(ChecksPanel).show_checks(self.session.checks,
                                                list(self.session.scenario.checks))

    def show_error(self, message: str, node: str | None = None) -> None:
        self.error = message
        if node is not None:
            self.state.broken = node
            self.query_one(GraphView).show_state(self.state)
            self.query_one(GraphView).select_node(node)
        self.notify(message, title="error" if node is None else f"error at {node}",
                    severity="error", timeout=10)
        self.show_status()

    def _inspect(self, key: str | None) -> None:
        if key is None or self.session is None:
            return
        inspector = self.query_one(Inspector)
        view = self.query_one(GraphView)
        if key.startswith(GROUP):
            members = view.members.get(key, [])
            inspector.show_group(key.removeprefix(GROUP), len(members),
                                 sum(1 for k in members if k in self.state.done))
            return
        from gradviz.core.derivatives import local_derivative

        graph = self.session.graph
        attrs = graph.nodes[key]
        children = sorted((graph.edges[key, child]["slot"], child) for child in graph.successors(key))
        incoming = self.incoming if key == self.state.pending else None
        inspector.show_node(key, attrs, self.events.get(key), children,
                            local_derivative(attrs["op"], attrs.get("args")), incoming)

    def _set_busy(self, what: str) -> None:
        self.busy = what
        self.show_status()
        # The footer rebuilds its keys on every refresh (about 10 ms): only when one changes.
        enabled = tuple(bool(self.check_action(b.action, ())) for b in self.BINDINGS)
        if enabled != self._enabled:
            self._enabled = enabled
            self.refresh_bindings()

    def show_status(self, text: str | None = None) -> None:
        status = self.query_one("#status", Static)
        if text is not None or self.session is None:
            status.update(text or "", layout=False)
            return
        session = self.session
        stepper = session.stepper
        total = len(stepper) if stepper else 0
        done = len(self.state.done)
        parts = [session.scenario.name, f"iteration {session.iteration}",
                 f"step {done}/{total}"]
        pending = self.state.pending
        if pending:
            attrs = session.graph.nodes[pending]
            parts.append(f"next: {attrs['op']}" + (f" ({attrs['module']})" if attrs.get("module") else ""))
        elif stepper is not None and stepper.finished:
            parts.append("backward done: o optimizer step"
                         + (", f new forward" if session.can_forward else ""))
        elif stepper is not None and stepper.done:
            parts.append("backward ended early" + (": f new forward" if session.can_forward else ""))
        if self.busy:
            parts.append(f"⏳ {self.busy} (esc stops)")
        if self.error:
            parts.append(f"error: {self.error}")
        status.update("  ·  ".join(parts), layout=False)  # one fixed line: no relayout

    # ------------------------------------------------------------------ actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("help", "quit", "stop", "find", "modules", "command_palette"):
            return True
        if self.session is None:
            return None
        if action == "continue" and self.busy.startswith("continuing"):
            return True  # c again pauses
        if self.busy:
            return None  # greyed out while the engine works
        stepper = self.session.stepper
        if action in ("step", "continue"):
            return True if stepper is None or not stepper.done else None
        if action == "optimizer":
            return True if self.session.watch is not None and self.session.backward_done else None
        if action in ("forward", "train"):
            return True if self.session.can_forward else None
        return True

    def action_step(self) -> None:
        self.query_one(GraphView).follow = True
        self._set_busy("stepping")
        self.run_engine("step")

    def action_continue(self) -> None:
        if self.busy.startswith("continuing"):
            self.stop.set()
            return
        self.query_one(GraphView).follow = True
        self._set_busy("continuing")
        self.run_engine("continue")

    def action_optimizer(self) -> None:
        self._set_busy("optimizer step")
        self.run_engine("optimizer")

    def action_forward(self) -> None:
        self._set_busy("forward pass")
        self.run_engine("forward")

    def action_train(self) -> None:
        self._set_busy("training: forward")
        self.run_engine("train")

    def action_export(self) -> None:
        self._set_busy("exporting")
        self.run_engine("export")

    def action_stop(self) -> None:
        if self.query_one("#find").display:
            self.query_one("#find").display = False
            self.query_one(GraphView).focus()
            return
        self.stop.set()
        if self.busy.startswith("training") and self.session is not None:
            self.session.close()  # a training backward runs in one go: abort it

    def action_modules(self) -> None:
        if self.session is None:
            return
        self.collapse_depth = None if self.collapse_depth else 1
        self.opened.clear()
        view = self.query_one(GraphView)
        view.show_graph(self.session.graph, self.collapse_depth)
        view.show_state(self.state)

    def action_find(self) -> None:
        find = self.query_one("#find", Input)
        find.display = True
        find.focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_quit(self) -> None:
        self._close_session()
        self.exit()

    def on_unmount(self) -> None:
        self._close_session()  # however the app ends, no backward is left waiting

    def _close_session(self) -> None:
        self.stop.set()
        if self.session is not None:
            self.session.close()  # the engine stops at its next node; its thread ends

    def on_resize(self, event) -> None:
        self.screen.set_class(event.size.width < 100 or event.size.height < 30, "-narrow")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "find" or self.session is None:
            return
        query = event.value.strip().lower()
        graph = self.session.graph
        view = self.query_one(GraphView)
        matches = [k for k, a in graph.nodes(data=True) if query and (
            query in a["op"].lower() or query in (a.get("module") or "").lower()
            or query in (a.get("name") or "").lower() or query in k.lower())]
        if not matches:
            self.notify(f"no node matches {event.value!r}", severity="warning")
            return
        matches.sort(key=lambda k: view.row_of.get(k, 0))
        current = view.row_key(view.cursor)
        later = [k for k in matches if view.row_of.get(k, 0) > view.cursor and k != current]
        target = later[0] if later else matches[0]
        view.select_node(target)
        self.notify(f"{matches.index(target) + 1} of {len(matches)}: {target}", timeout=2)

    def on_graph_view_node_selected(self, message: GraphView.NodeSelected) -> None:
        self._inspect(message.key)

    def on_graph_view_group_opened(self, message: GraphView.GroupOpened) -> None:
        self.opened.add(message.module)
        view = self.query_one(GraphView)
        view.show_graph(self.session.graph, self.collapse_depth, frozenset(self.opened))
        view.show_state(self.state)

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            if binding.show and binding.action not in ("help", "quit"):
                if self.check_action(binding.action, ()):
                    yield SystemCommand(binding.description.capitalize(),
                                        f"key {binding.key}",
                                        getattr(self, f"action_{binding.action}"))
        from gradviz.core.catalog import builtin_scenarios

        for info in builtin_scenarios():
            yield SystemCommand(f"Open demo {info.name}", info.description,
                                lambda name=info.name: self._switch(name))

    def _switch(self, name: str) -> None:
        if self.session is not None:
            self.session.close()
        self.session = None
        self.query_one("#loading").display = True
        self.load(name)


def _settings(group: dict[str, Any]) -> str:
    shown = []
    for key in ("lr", "momentum", "betas", "weight_decay", "nesterov"):
        value = group.get(key)
        if value not in (None, 0, False):
            shown.append(f"{key}={value}")
    return " ".join(shown)


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def make_app(scenario: str | None = None, **kwargs) -> GradvizApp:
    """The one factory for the CLI and the tests (so both get the same app)."""
    return GradvizApp(scenario, **kwargs)


def run_app(scenario: str | None = None, *, debug: bool = False, **kwargs) -> int:
    """Run the app in this terminal until it is closed; the CLI's exit code."""
    from gradviz.core.deep_graphs import WORKER_STACK_BYTES

    # Workers may drop the last reference to a deep graph: give new threads room.
    threading.stack_size(WORKER_STACK_BYTES)
    app = make_app(scenario, **kwargs)
    app.run()
    if app.return_code:
        return app.return_code
    return 0
