"""GradvizApp: PyTorch's backward, one node at a time, in the terminal.

The app draws a session's state and asks it what is allowed; it never decides
either itself. Where things stand lives in one
:class:`~gradviz.model.state.SessionState` (loading, a forward pass,
paused at a node, continuing, finished, failed at a node, optimizer stepped):
a key goes to ``state.request``, which starts it, queues it (steps), pauses
(continue, pressed again) or refuses it with the reason; torch work runs on one
:class:`~gradviz.runtime.serial_worker.SerialWorker` thread, which posts progress
and state changes back as messages. Widgets never touch torch, and this module
imports none, so the first frame shows at once while torch loads.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from gradviz.model.layout import GROUP, GraphLayout, lay_out
from gradviz.runtime.serial_worker import SerialWorker
from gradviz.model.state import Action, Activity, Phase, SessionState, StateView
from gradviz.tui.widgets.graph_view import GraphState, GraphView
from gradviz.tui.widgets.panels import ChecksPanel, ForwardLog, Inspector, ParamsTable, forward_step_lines
from gradviz.tui.widgets.plots import GradFlow, LossPlot
from gradviz.tui.widgets.run_so_far import RunSoFar
from gradviz.tui.screens.run_view import RunScreen
from gradviz.tui.screens.dialogs import HELP_KEYS, HelpScreen, PickerScreen

if TYPE_CHECKING:
    from gradviz.session.progress import Progress
    from gradviz.training.breaks import TrainingPause
    from gradviz.session.session import Session

#: Graphs over this many nodes start with their modules folded into one row each.
FOLD_OVER = 2000
#: ``c`` on a graph up to this many nodes is spread over ANIMATE_SECONDS to be watched.
ANIMATE_UP_TO = 2000
ANIMATE_SECONDS = 1.0
FRAME_SECONDS = 1 / 30  # the screen takes progress this often while backward runs
# ... and on a graph too big to animate: each slice pauses the engine and draws a frame
# while holding the GIL; at 1/30 s a 200,000-node continue took 1.7x run(), at 1/10 s 1.4x.
BIG_FRAME_SECONDS = 1 / 10
PANELS_EVERY = 0.25  # seconds between redraws of the table, plot and inspector while backward runs
# A step's "stepping" is shown only if it is still running this long after the key: most
# steps take milliseconds, and drawing the busy line for them would flicker and hold the
# frame with the step's result back by one refresh period (Textual draws at most 60/s).
QUICK_WORK_SECONDS = 0.1
# Quitting waits at most this long for the engine's thread to finish what it runs.
ENGINE_EXIT_SECONDS = 3.0
_QUICK = (Activity.STEPPING, Activity.FORWARD_STEPPING)

_HELP_BY_KEY = {keys.split()[0]: what for keys, what in HELP_KEYS}  # for the palette
_PALETTE_TITLES = {"forward_step": "Step the forward op by op", "picker": "Open a scenario",
                   "modules": "Fold or unfold modules", "run_so_far": "The run so far"}
_KEY_ACTIONS = {"step": Action.STEP, "continue": Action.CONTINUE, "optimizer": Action.OPTIMIZER,
                "train": Action.TRAIN, "forward": Action.FORWARD, "export": Action.EXPORT,
                "forward_step": Action.FORWARD_STEP}


class GradvizApp(App[int]):
    """The app; give it a scenario name or path, a ready Session, or neither (a picker)."""

    CSS_PATH = [Path(__file__).with_name("app.tcss"),  # absolute: subclasses live elsewhere
                Path(__file__).with_name("run_view.tcss")]
    TITLE = "gradviz"
    AUTO_FOCUS = "#graph"
    BINDINGS = [
        Binding("n,space", "step", "step", id="step"),
        Binding("c", "continue", "continue", id="continue"),
        Binding("o", "optimizer", "optimizer", id="optimizer"),
        Binding("t", "train", "train", id="train"),
        Binding("f", "forward", "forward", id="forward"),
        Binding("s", "forward_step", "op", id="forward_step"),
        Binding("e", "export", "export", id="export", show=False),
        Binding("slash", "find", "find", id="find", show=False),
        Binding("m", "modules", "modules", id="modules", show=False),
        Binding("p", "picker", "open", id="picker"),
        Binding("escape", "stop", "stop", show=False, id="stop"),
        Binding("question_mark", "help", "help", id="help"),
        Binding("x", "stop_training", "stop training", id="stop-training"),
        Binding("r", "run_so_far", "run", id="run-so-far", show=False),
        Binding("q", "quit", "quit", id="quit"),
    ]

    class StateChanged(Message):
        """The session's state changed (posted from whichever thread changed it)."""

    class ForwardStepped(Message):
        """Operations of a stepped forward ran (ForwardSteps: one, or the rest at once)."""

        def __init__(self, session: Any, steps: list) -> None:
            super().__init__()
            self.session = session
            self.steps = steps

    class ProgressMade(Message):
        def __init__(self, session: Any, progress: Progress) -> None:
            super().__init__()
            self.session = session
            self.progress = progress

    class Loaded(Message):
        def __init__(self, session: Any) -> None:
            super().__init__()
            self.session = session

    class LaidOut(Message):
        def __init__(self, session: Any, laid_out: GraphLayout) -> None:
            super().__init__()
            self.session = session
            self.laid_out = laid_out

    class UpdateMade(Message):
        """An optimizer step's report."""

        def __init__(self, session: Any, report: Any) -> None:
            super().__init__()
            self.session = session
            self.report = report

    class EngineFailed(Message):
        """A job on the engine's thread raised where nothing else caught it: a bug of ours."""

        def __init__(self, error: BaseException) -> None:
            super().__init__()
            self.error = error

    class ParamExplained(Message):
        """What a selected parameter is, and why it has no gradient if it has none."""

        def __init__(self, name: str, lines: list) -> None:
            super().__init__()
            self.name = name
            self.lines = lines

    class EventsDescribed(Message):
        """Nodes that ran in a big slice had their summaries read on the engine's thread."""

        def __init__(self, session: Any, norms: dict[str, float | None]) -> None:
            super().__init__()
            self.session = session
            self.norms = norms  # node -> the largest |grad| it sent (None: sent nothing)

    def __init__(self, scenario: str | None = None, *, weights: str | None = None,
                 session: Session | None = None, export_dir: str | Path = ".",
                 pause: TrainingPause | None = None) -> None:
        super().__init__()
        self.pause = pause  # a gradviz.watch break opened the app: its run, a way to stop it
        if pause is not None:
            session = pause.session
        self.scenario_ref = scenario
        self.weights = weights
        self.session: Session | None = session
        self.state = session.state if session is not None else SessionState()
        self.state.subscribe(lambda view: self.post_message(self.StateChanged()))
        self.engine = SerialWorker(
            on_error=lambda error: self.post_message(self.EngineFailed(error)))
        self.export_dir = Path(export_dir)
        self.graph_state = GraphState()
        self.events: dict[str, Any] = {}
        self.summarized: set[str] = set()
        self._asked: set[str] = set()  # nodes whose summaries the engine was asked to read
        self.incoming: tuple = ()
        self.flow: dict[str, float] = {}
        self._flow_dirty = False
        self._grads_to_show: dict[str, Any] = {}  # drawn by _draw_panels
        self._follow: str | None = None  # the node to inspect when the panels are drawn
        self.fold_depth: int | None = None
        self.opened: set[str] = set()
        self.failed_from_cli = False  # the scenario named on the command line did not load
        self._shown_graph: Any = None
        self._panels_timer: Any = None
        self._busy_timer: Any = None
        self._visible_timer: Any = None
        self._inspected: str | None = None
        self._rendered_version = -1
        self._enabled: tuple[bool, ...] = ()

    @property
    def shown_graph(self):
        """The graph on screen (a new one shows once laid out, off the UI thread)."""
        return self._shown_graph

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield GraphView(id="graph")
            with Vertical(id="side"):
                yield RunSoFar(id="run-so-far")
                yield Inspector(id="inspector")
                with TabbedContent(id="tabs"):
                    with TabPane("parameters", id="params-tab"):
                        yield ParamsTable(id="params")
                    with TabPane("forward ops", id="ops-tab"):
                        yield ForwardLog(id="ops")
        yield Static(id="welcome")
        with Horizontal(id="bottom"):
            yield LossPlot(id="loss")
            yield GradFlow(id="flow")
            yield ChecksPanel(id="checks")
        yield Input(placeholder="find: op, module or parameter name (enter: next)", id="find")
        yield Static(id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#graph").border_title = "autograd graph (root at the top)"
        self.query_one("#inspector").border_title = "node"
        self.query_one("#tabs").border_title = "parameters and optimizer"
        self.query_one("#find").display = False
        self._narrow(self.size.width, self.size.height)
        if self.pause is not None:
            self.add_class("-paused")
            self.query_one(RunSoFar).show(self.pause.history, self.pause.brk)
        if self.session is not None:  # a graph from gradviz.show()
            self.session.on_new_graph = self._lay_out_on_engine
            self._adopt(self.session)
            self._lay_out_worker(self.session, self.fold_depth, frozenset())
        elif self.scenario_ref is not None:
            self.open_scenario(self.scenario_ref, weights=self.weights, from_cli=True)
        else:
            self.action_picker()
        self._render_state()

    # ------------------------------------------------------------------ opening
    def open_scenario(self, ref: str, *, weights: str | None = None,
                      from_cli: bool = False) -> None:
        """Load ``ref`` on the engine's thread; what is shown stays until it has loaded."""
        if self.state.view().busy:
            self.state.request(Action.STOP)  # the running work ends first, then this
        if not from_cli:
            self.failed_from_cli = False
        self.engine.submit(functools.partial(self._load, ref, weights, from_cli))

    def _load(self, ref: str, weights: str | None, from_cli: bool) -> None:
        """Engine thread: import torch, build the scenario, make its first graph."""
        self.state.start_loading(ref)
        self.state.loading_stage("importing torch")
        try:
            from gradviz.engine.interrupt import Interrupted
            from gradviz.session.session import Session
        except BaseException as error:  # torch itself did not import
            from gradviz.model.state import Failure

            self.state.load_failed(Failure(Activity.LOADING, f"import failed: {error}"))
            self.failed_from_cli = from_cli
            return
        try:
            session = Session.load(ref, weights=weights, state=self.state)
        except Interrupted:
            return
        except Exception:  # the state has the failure; the screen shows it
            self.failed_from_cli = from_cli and self.session is None
            return
        session.on_new_graph = self._lay_out_on_engine
        self.post_message(self.Loaded(session))
        self._lay_out_on_engine(session)

    def on_gradviz_app_loaded(self, message: Loaded) -> None:
        old, self.session = self.session, message.session
        if old is not None and old is not message.session:
            old.detach()  # its closing must not touch the state the new session now owns
            self.engine.submit(old.close)
        self.failed_from_cli = False
        self._adopt(message.session)
        self._render_state(force=True)

    def _adopt(self, session: Session) -> None:
        """Show a session that has loaded: its parameters, optimizer and (soon) its graph."""
        params = [(name, tuple(tensor.shape), not tensor.requires_grad)
                  for name, tensor in session.leaves.items()]
        self.query_one(ParamsTable).show_params(params)
        title = "parameters and optimizer"
        if session.watch is not None:
            title += (f": {type(session.watch.optimizer).__name__} "
                      + _settings(session.watch.optimizer.param_groups[0]))
        self.query_one("#tabs").border_title = title

    # ------------------------------------------------------------------ graphs
    def _lay_out_on_engine(self, session: Session) -> None:
        """Engine thread, after a forward: lay the new graph out before the screen asks."""
        graph = session.graph
        if graph is None:
            return
        depth = self.fold_depth
        if depth is None and graph.number_of_nodes() > FOLD_OVER:
            depth = 1  # thousands of rows: start with the modules folded
        self.post_message(self.LaidOut(session, lay_out(graph, depth, frozenset(self.opened))))

    @work(thread=True, exclusive=True, group="layout")
    def _lay_out_worker(self, session: Session, depth: int | None, opened: frozenset) -> None:
        """Plain Python (networkx), no torch: fine on a Textual thread worker."""
        graph = session.graph
        if depth is None and graph.number_of_nodes() > FOLD_OVER and not self.opened:
            depth = 1
        self.post_message(self.LaidOut(session, lay_out(graph, depth, opened)))

    def on_gradviz_app_laid_out(self, message: LaidOut) -> None:
        session, laid_out = message.session, message.laid_out
        if session is not self.session or laid_out.graph is not session.graph:
            return  # an old graph's layout arrived after a newer one
        if laid_out.folded and self.fold_depth is None:
            self.fold_depth = 1
        view = self.query_one(GraphView)
        new_graph = self._shown_graph is not laid_out.graph
        if new_graph:
            self._shown_graph = laid_out.graph
            self._reset_progress(laid_out.graph)
            view.follow = True
        view.show_layout(laid_out)
        view.show_state(self.graph_state)
        if new_graph:
            self.query_one("#tabs", TabbedContent).active = "params-tab"
            self.query_one(ParamsTable).clear_grads()
            self.query_one(GradFlow).show_flow([])
            self.query_one(LossPlot).show_losses(list(session.losses))
            self._show_checks()
            roots = laid_out.graph.graph.get("roots")
            if roots:
                view.mark_node(roots[0])  # a new graph starts at its root, not where the old was
                self._inspect(roots[0])
        self._render_state(force=True)

    def _reset_progress(self, graph) -> None:
        self.graph_state = GraphState(ready={k for k in graph if graph.in_degree(k) == 0})
        self.events = {}
        self.summarized = set()
        self._asked = set()
        self.incoming = ()
        self.flow = {}
        self._flow_dirty = False
        self._grads_to_show = {}
        self._follow = None

    # ------------------------------------------------------------------ engine jobs
    def _perform(self, action: Action, **options) -> None:
        """Engine thread: run ``action`` on the session (the state was told it started)."""
        session = self.session
        if session is None:
            return
        report = functools.partial(self._post_progress, session)
        if action in (Action.CONTINUE, Action.STEP, Action.TRAIN):
            options.setdefault("chunk_seconds", FRAME_SECONDS)
        if action is Action.EXPORT:
            options["folder"] = self.export_dir

        def deliver(result: object) -> None:
            if action is Action.OPTIMIZER:
                self.post_message(self.UpdateMade(session, result))

        session.perform(action, report, deliver=deliver, **options)

    def _post_progress(self, session: Session, progress: Any) -> None:
        from gradviz.session.progress import ForwardStep

        if isinstance(progress, ForwardStep):
            self.post_message(self.ForwardStepped(session, [progress]))
        elif isinstance(progress, list):  # the rest of a forward, run at once
            self.post_message(self.ForwardStepped(session, progress))
        else:
            self.post_message(self.ProgressMade(session, progress))

    def _describe_events(self, session: Session, keys: list[str]) -> None:
        """Engine thread: summaries for nodes that ran in a big slice (in sight, or
        inspected), which the screen then shows."""
        if session is not self.session:
            return
        norms = {}
        for key in keys:
            event = self.events.get(key)
            if event is not None:
                event.summarize()
                sent = [s.norm for s in (*event.grad_inputs, event.param_grad) if s is not None]
                norms[key] = max(sent) if sent else None
        self.post_message(self.EventsDescribed(session, norms))

    def _describe_visible(self) -> None:
        """The nodes in sight that ran without their |g| read: read them (not while the
        engine is busy: then it comes when the work ends)."""
        self._visible_timer = None
        if not self.is_running or self.session is None or self.state.view().busy:
            return  # (not running: quitting, its screen may be gone before its timers)
        missing = [key for key in self.query_one(GraphView).visible_keys()
                   if key in self.events and key not in self.summarized
                   and key not in self._asked]
        if missing:
            self._asked.update(missing)  # asked once
            self.engine.submit(functools.partial(self._describe_events, self.session, missing))

    def on_graph_view_scrolled(self, message: GraphView.Scrolled) -> None:
        if self._visible_timer is None:
            self._visible_timer = self.set_timer(0.15, self._describe_visible)

    # ------------------------------------------------------------------ UI thread
    def on_gradviz_app_progress_made(self, message: ProgressMade) -> None:
        if message.session is not self.session:
            return
        progress = message.progress
        state = self.graph_state
        changed = {event.node for event in progress.events}
        changed |= state.ready ^ set(progress.ready)
        changed |= {state.pending, progress.pending, progress.nonfinite} - {None}
        for event in progress.events:
            self.events[event.node] = event
            state.done.add(event.node)
        self.summarized |= set(progress.norms)
        state.norms.update(progress.norms)
        state.pending = progress.pending
        state.ready = set(progress.ready)
        if progress.nonfinite:
            state.broken = progress.nonfinite
        self.incoming = progress.incoming
        self._grads_to_show.update(progress.grads)
        if progress.flow:
            self.flow.update(progress.flow)
            self._flow_dirty = True
        view = self.query_one(GraphView)
        view.show_state(state, changed)
        if view.follow:
            last = progress.events[-1].node if progress.events else None
            self._follow = progress.pending or last
            if progress.pending is None and last is not None:  # the end: show the last node
                view.mark_node(last)
        # A step draws the panels at once. While backward runs on, they are drawn four
        # times a second: the inspector's new height lays out the whole screen, and the
        # table and the plot cost a frame each; per slice, they slowed the engine (the GIL).
        running = self.state.view().activity in (Activity.CONTINUING, Activity.TRAINING)
        if progress.finished or not running:
            self._draw_panels()
        elif self._panels_timer is None:
            self._panels_timer = self.set_timer(PANELS_EVERY, self._draw_panels)
        if progress.finished:
            self._show_checks()

    def _draw_panels(self) -> None:
        """The parameters table, the gradient-flow plot and the followed node."""
        if self._panels_timer is not None:
            self._panels_timer.stop()
        self._panels_timer = None
        if not self.is_running or self.session is None:
            return
        if self._grads_to_show:
            params = self.query_one(ParamsTable)
            for name, summary in self._grads_to_show.items():
                params.show_grad(name, summary)
            self._grads_to_show = {}
        if self._flow_dirty:
            self._flow_dirty = False
            order = list(self.session.leaves)
            for plot in self.query(GradFlow):  # none once the app is closing
                plot.show_flow([(name, self.flow[name]) for name in order if name in self.flow])
        if self._follow is not None:
            key, self._follow = self._follow, None
            if self.query_one(GraphView).follow:  # not if the user has moved since
                self._inspect(key)

    def on_data_table_row_selected(self, event) -> None:
        """Enter on a parameter: the inspector says what it is and, without a .grad, why."""
        if event.data_table.id != "params" or self.session is None:
            return
        name = str(event.row_key.value)
        self.engine.submit(functools.partial(self._explain_param, self.session, name))

    def _explain_param(self, session: Session, name: str) -> None:
        """Engine thread: read the parameter (torch) and ask the session why."""
        from rich.text import Text

        tensor = session.leaves.get(name)
        if tensor is None:
            return
        lines = [Text.assemble((name, "bold blue"), "  ", (str(tuple(tensor.shape)), "grey62")),
                 Text(f"requires_grad={tensor.requires_grad}", "grey62")]
        if tensor.grad is not None:
            from gradviz.engine.summary import summarize

            from gradviz.tui.widgets.panels import summary_text

            lines += [Text(".grad:", "bold"), summary_text(summarize(tensor.grad))]
        else:
            try:
                answer = session.why_no_grad(name)
                lines += [Text("no .grad: why", "bold yellow"), Text(answer.message, "yellow")]
            except Exception as error:  # an answer we could not give: say so, do not crash
                from gradviz.errors import one_line

                lines.append(Text(f"no .grad; why is unknown: {one_line(error)}", "grey50"))
        self.post_message(self.ParamExplained(name, lines))

    def on_gradviz_app_param_explained(self, message: ParamExplained) -> None:
        self._inspected = None
        self.query_one(Inspector).show_lines(message.lines)

    def on_gradviz_app_engine_failed(self, message: EngineFailed) -> None:
        """Say so on screen (and in Textual's log, with the traceback); never leave a spinner."""
        import traceback

        from gradviz.errors import one_line
        from gradviz.model.state import Failure

        self.log.error("".join(traceback.format_exception(message.error)))
        view = self.state.view()
        failure = Failure(view.activity, f"internal error: {one_line(message.error)} "
                                         "(please report it)", hint="q quits; p opens another")
        if view.activity is Activity.LOADING:
            self.state.load_failed(failure)
        else:
            self.state.failed(failure)

    def on_gradviz_app_forward_stepped(self, message: ForwardStepped) -> None:
        """Show the graph so far, the node just recorded, and the operation behind it."""
        if message.session is not self.session or not message.steps:
            return
        log = self.query_one(ForwardLog)
        if message.steps[0].index == 0:
            log.start()
            self.query_one("#tabs", TabbedContent).active = "ops-tab"
        log.add_steps(message.steps)
        step = message.steps[-1]
        if not step.summarized:  # the rest of the forward: the log only, its graph comes next
            return
        if step.laid_out is not None:
            graph = step.laid_out.graph
            self._shown_graph = graph
            self.graph_state = GraphState(new=frozenset(step.new_nodes))
            self.events, self.summarized, self.incoming = {}, set(), ()
            view = self.query_one(GraphView)
            view.placeholder = ("no node yet: the operations so far need no gradient, so "
                                "autograd records nothing for them")
            view.show_layout(step.laid_out)
            view.show_state(self.graph_state)
            if step.new_nodes:
                view.mark_node(step.new_nodes[0])
        self.query_one(Inspector).show_lines(forward_step_lines(step))
        self._render_state(force=True)

    def on_gradviz_app_events_described(self, message: EventsDescribed) -> None:
        if message.session is not self.session:
            return
        self.summarized.update(message.norms)
        self.graph_state.norms.update({k: v for k, v in message.norms.items() if v is not None})
        view = self.query_one(GraphView)
        view.show_state(self.graph_state, set(message.norms))
        for key in (view.row_key(view.cursor), self._inspected):
            if key in message.norms:
                self._inspect(key)
                break

    def on_gradviz_app_update_made(self, message: UpdateMade) -> None:
        if message.session is self.session:
            self.query_one(ParamsTable).show_update(message.report)

    def _show_checks(self) -> None:
        if self.session is not None:
            expected = list(self.session.scenario.checks)
            self.query_one(ChecksPanel).show_checks(self.session.checks, expected)
            self.set_class(not expected, "-no-checks")

    def _inspect(self, key: str | None) -> None:
        if key is None or self.session is None or self._shown_graph is None:
            return
        self._inspected = key
        inspector = self.query_one(Inspector)
        view = self.query_one(GraphView)
        if key.startswith(GROUP):
            members = view.members.get(key, [])
            inspector.show_group(key.removeprefix(GROUP), len(members),
                                 sum(1 for k in members if k in self.graph_state.done))
            return
        graph = self._shown_graph
        if key not in graph:
            return
        from gradviz.model.derivatives import local_derivative

        attrs = graph.nodes[key]
        children = sorted((graph.edges[key, child]["slot"], child)
                          for child in graph.successors(key))
        event = self.events.get(key)
        if event is not None and key not in self.summarized:
            self.engine.submit(functools.partial(self._describe_events, self.session, [key]))
            event = None  # shown as soon as its summaries are read
        incoming = self.incoming if key == self.graph_state.pending else None
        inspector.show_node(key, attrs, event, children,
                            local_derivative(attrs["op"], attrs.get("args")), incoming)

    # ------------------------------------------------------------------ drawing the state
    def on_gradviz_app_state_changed(self, message: StateChanged) -> None:
        self._render_state()

    def _render_state(self, *, force: bool = False) -> None:
        view = self.state.view()
        if view.version == self._rendered_version and not force:
            return
        if view.activity in _QUICK and not force:
            if self._busy_timer is None:
                self._busy_timer = self.set_timer(QUICK_WORK_SECONDS, self._show_busy)
            return
        self._rendered_version = view.version
        if not view.busy and self._panels_timer is not None:  # the work is over: draw it now
            self._draw_panels()
        if not view.busy and self._visible_timer is None and self.events:
            self._visible_timer = self.set_timer(0.05, self._describe_visible)
        self._render_status(view)
        self._render_welcome(view)
        failure = view.failure
        inspector = self.query_one(Inspector)
        inspector.show_failure(failure.message if failure else "", failure.hint if failure else "")
        if failure is not None and failure.node and self._shown_graph is not None:
            if failure.node in self._shown_graph and self.graph_state.broken != failure.node:
                self.graph_state.broken = failure.node
                graph_view = self.query_one(GraphView)
                graph_view.show_state(self.graph_state, {failure.node})
                graph_view.select_node(failure.node)
        if view.phase is Phase.FAILED or view.phase is Phase.ABORTED:
            self.graph_state.pending = None
            self.query_one(GraphView).show_state(self.graph_state)
        if view.phase is Phase.NONE and not view.busy and self._shown_graph is not None:
            self._clear_graph()  # a stepped forward abandoned (esc): its partial graph goes
        # The footer rebuilds its keys on every refresh (about 10 ms): only when one changes.
        enabled = tuple(bool(self.check_action(b.action, ())) for b in self.BINDINGS)
        if enabled != self._enabled:
            self._enabled = enabled
            self.refresh_bindings()

    def _clear_graph(self) -> None:
        from rich.text import Text

        self._shown_graph = None
        self.graph_state = GraphState()
        graph_view = self.query_one(GraphView)
        graph_view.placeholder = "no graph: f a forward pass, s one operation at a time"
        graph_view.show_layout(GraphLayout(graph_view.graph, [], {}, {}, 0))
        self.query_one(Inspector).show_text(Text("no graph yet", "grey50"))

    def _show_busy(self) -> None:
        self._busy_timer = None
        if self.is_running and self.state.view().activity in _QUICK:
            self._render_state(force=True)

    def _render_status(self, view: StateView) -> None:
        status = self.query_one("#status", Static)
        width = (status.size.width - 2) if status.size.width else 1000
        status.update(status_line(view, self._shown_graph, width), layout=False)

    def _render_welcome(self, view: StateView) -> None:
        """With nothing loaded, the screen says what is loading, what failed, what to do."""
        welcome = self.query_one("#welcome", Static)
        empty = self.session is None
        self.set_class(empty, "-empty")
        if not empty:
            return
        from rich.text import Text

        text = Text("gradviz\n", "bold")
        text.append("PyTorch's autograd graph, and backward one node at a time\n\n", "grey62")
        if view.activity is Activity.LOADING:
            text.append(f"loading {view.loading}: {view.note or 'starting'}…", "yellow")
            text.append("   (esc stops)", "grey50")
        elif view.failure is not None:
            text.append("could not open it\n", "bold red")
            text.append(view.failure.message + "\n\n", "red")
            text.append("p: choose a scenario   ctrl+p: command palette   q: quit", "yellow")
        else:
            text.append("p: choose a scenario   ctrl+p: command palette   q: quit", "yellow")
        welcome.update(text)

    # ------------------------------------------------------------------ keys
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        wanted = _KEY_ACTIONS.get(action)
        if wanted is not None:
            if self.session is None:
                return False  # nothing loaded: hidden, so the footer has room for p, ? and q
            return True if self.state.view().available(wanted) else None
        if action in ("modules", "find"):
            return True if self._shown_graph is not None else None
        if action in ("stop_training", "run_so_far"):
            return self.pause is not None  # False hides them: no training loop behind the app
        return True

    def on_key(self, event: Any) -> None:
        """A greyed key (check_action said no) never reaches its action; say why it did
        nothing rather than staying silent."""
        if self.screen is not self.screen_stack[0] or isinstance(self.focused, Input):
            return
        for binding in self.BINDINGS:
            wanted = _KEY_ACTIONS.get(binding.action)
            if wanted is not None and event.key in binding.key.split(","):
                view = self.state.view()
                if not view.available(wanted):
                    self.notify(view.why_not(wanted), timeout=3)
                return

    def _request(self, action: Action) -> None:
        decision = self.state.request(action)
        if decision.verdict == "start":
            if action in (Action.STEP, Action.CONTINUE, Action.TRAIN):
                self.query_one(GraphView).follow = True
            options = {}
            if action is Action.CONTINUE and self.session is not None and self.session.stepper:
                if len(self.session.stepper) <= ANIMATE_UP_TO:
                    options["animate_seconds"] = ANIMATE_SECONDS
                else:
                    options["chunk_seconds"] = BIG_FRAME_SECONDS
            self.engine.submit(functools.partial(self._perform, action, **options))
        elif decision.verdict == "refused":
            self.notify(decision.reason, timeout=3)

    def action_step(self) -> None:
        self._request(Action.STEP)

    def action_continue(self) -> None:
        self._request(Action.CONTINUE)

    def action_optimizer(self) -> None:
        self._request(Action.OPTIMIZER)

    def action_forward(self) -> None:
        self._request(Action.FORWARD)

    def action_forward_step(self) -> None:
        self._request(Action.FORWARD_STEP)

    def action_train(self) -> None:
        self._request(Action.TRAIN)

    def action_export(self) -> None:
        self._request(Action.EXPORT)

    def action_stop(self) -> None:
        find = self.query_one("#find", Input)
        if find.display:
            find.display = False
            self.query_one(GraphView).focus()
            return
        view = self.state.view()
        if view.phase is Phase.FORWARD and not view.busy and self.session is not None:
            self.engine.submit(self.session.abandon_forward)  # esc abandons a paused forward
            return
        if self.state.request(Action.STOP).verdict == "refused":
            self.state.dismiss_failure()

    def action_picker(self) -> None:
        from gradviz.session.catalog import builtin_scenarios

        choices = [(info.name, info.description) for info in builtin_scenarios()]
        self.push_screen(PickerScreen(choices), self._picked)

    def _picked(self, ref: str | None) -> None:
        if ref:
            self.open_scenario(ref)

    def action_modules(self) -> None:
        if self.session is None or self._shown_graph is None:
            return
        graph = self._shown_graph
        if not any(attrs.get("module") for _, attrs in graph.nodes(data=True)):
            self.notify("this graph has no module names to fold by: they come from a forward "
                        "run under gradviz.record(model), or a scenario with a model", timeout=5)
            return
        self.fold_depth = None if self.fold_depth else 1
        self.opened.clear()
        self._lay_out_worker(self.session, self.fold_depth, frozenset())

    def action_find(self) -> None:
        find = self.query_one("#find", Input)
        find.display = True
        find.focus()

    def action_stop_training(self) -> None:
        """Close the app and stop the watched loop: it raises TrainingStopped there."""
        if self.pause is not None:
            self.pause.request_stop()
            self.action_quit()

    def action_run_so_far(self) -> None:
        if self.pause is not None:
            self.push_screen(RunScreen(self.pause.history,
                                       source=f"break at iteration {self.pause.brk.iteration}"))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_quit(self) -> None:
        self._shut_down()
        self.exit(return_code=1 if self.failed_from_cli else 0)

    def on_unmount(self) -> None:
        self._shut_down()  # however the app ends, no backward is left waiting

    def _shut_down(self) -> None:
        if self.state.view().busy:
            self.state.request(Action.STOP)
        if self.session is not None:
            self.session.close()  # the engine stops at its next node; its thread ends
        # Let the engine finish what it runs (stopped at its next node or torch call,
        # an old session's close): a daemon thread still inside torch when Python
        # finalizes aborts the process ("terminate called without an active exception",
        # exit 134), seen on quitting right after opening a second scenario.
        self.engine.shutdown(timeout=ENGINE_EXIT_SECONDS)

    def on_resize(self, event) -> None:
        self._narrow(event.size.width, event.size.height)

    def _narrow(self, width: int, height: int) -> None:
        """On the app, not a screen: the main screen follows even while a dialog is open."""
        self.set_class(width < 100 or height < 30, "-narrow")
        for footer in self.query(Footer):  # under 90 columns "^p palette" squeezed "q quit" off
            footer.show_command_palette = width >= 90
        if self.is_mounted:
            self._render_status(self.state.view())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "find" or self._shown_graph is None:
            return
        query = event.value.strip().lower()
        graph = self._shown_graph
        view = self.query_one(GraphView)
        matches = [k for k, a in graph.nodes(data=True) if query and (
            query in a["op"].lower() or query in (a.get("module") or "").lower()
            or query in (a.get("name") or "").lower() or query in k.lower())]
        if not matches:
            self.notify(f"no node matches {event.value!r}", severity="warning", timeout=3)
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
        if self.session is None:
            return
        self.opened.add(message.module)
        self._lay_out_worker(self.session, self.fold_depth, frozenset(self.opened))

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            if binding.action in ("help", "quit", "stop"):
                continue
            if self.check_action(binding.action, ()):
                key = binding.key.split(",")[0].replace("slash", "/")
                what = _HELP_BY_KEY.get(key, binding.description)
                title = _PALETTE_TITLES.get(binding.action, binding.description.capitalize())
                yield SystemCommand(title, f"{key}: {what}",
                                    getattr(self, f"action_{binding.action}"))
        from gradviz.session.catalog import builtin_scenarios

        for info in builtin_scenarios():
            yield SystemCommand(f"Open demo {info.name}", info.description,
                                functools.partial(self.open_scenario, info.name))


def status_line(view: StateView, graph, width: int = 1000) -> str:
    """The one line under everything: where the session stands and what to do next.

    Parts that do not fit ``width`` go, least needed first: the iteration, the
    scenario's name, the step count; the error and what is running always stay.
    """
    if view.scenario is None:
        if view.activity is Activity.LOADING:
            return f"loading {view.loading}: {view.note or 'starting'}…  (esc stops)"
        if view.failure is not None:
            return f"error: {view.failure.message}"
        return "no scenario: p to choose one"
    way_on = "f new forward" if view.can_forward else ""
    iteration = [(5, f"iteration {view.iteration}")] if view.has_optimizer else []
    if view.phase is Phase.FORWARD:
        parts = [(4, view.scenario), *iteration,
                 (3, f"forward: {_count(view.ops, 'operation')}, {_count(view.nodes, 'node')}"),
                 (2, "s next operation, c the rest, esc abandons")]
    elif view.phase is Phase.NONE:
        parts = [(4, view.scenario), *iteration,
                 (2, "no graph: f a forward pass, s one operation at a time")]
    else:
        parts = [(4, view.scenario), *iteration, (3, f"step {view.done}/{view.nodes}")]
    if view.phase is Phase.PAUSED and view.failure is None:
        pending = view.pending
        roots = graph.graph.get("roots") if graph is not None else None
        if pending is None and view.done == 0 and roots:  # backward has not started
            pending = roots[0]
        if pending is not None and graph is not None and pending in graph:
            attrs = graph.nodes[pending]
            parts.append((2, f"next: {attrs['op']}"
                          + (f" ({attrs['module']})" if attrs.get("module") else "")))
    elif view.phase is Phase.FINISHED:
        if view.applied:
            parts.append((2, "optimizer stepped" + (f": {way_on}" if way_on else "")))
        elif view.has_optimizer:
            parts.append((2, "backward done: o optimizer" + (f", {way_on}" if way_on else "")))
        else:
            parts.append((2, "backward done" + (f": {way_on}" if way_on else "")))
    elif view.phase is Phase.ABORTED:
        parts.append((2, "backward stopped" + (f": {way_on}" if way_on else "")))
    if view.activity is Activity.LOADING:
        parts.append((0, f"loading {view.loading}: {view.note or 'starting'}… (esc stops)"))
    elif view.busy:
        queued = f", {view.queued_steps} more queued" if view.queued_steps else ""
        then = ", then continue" if view.continue_after else ""
        parts.append((0, f"⏳ {view.activity.value}{queued}{then} (esc stops)"))
    elif view.note:
        parts.append((1, view.note))
    if view.failure is not None:
        parts.append((0, f"error: {view.failure.message}"))
    while len(parts) > 1 and len("  ·  ".join(text for _, text in parts)) > width:
        least = max(range(len(parts)), key=lambda i: (parts[i][0], i))
        if parts[least][0] == 0:
            break
        del parts[least]
    return "  ·  ".join(text for _, text in parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _settings(group: dict[str, Any]) -> str:
    shown = []
    for key in ("lr", "momentum", "betas", "weight_decay", "nesterov"):
        value = group.get(key)
        if value not in (None, 0, False):
            shown.append(f"{key}={value}")
    return " ".join(shown)


def make_app(scenario: str | None = None, **kwargs) -> GradvizApp:
    """The one factory for the CLI and the tests (so both get the same app)."""
    return GradvizApp(scenario, **kwargs)


def run_app(scenario: str | None = None, *, debug: bool = False, **kwargs) -> int:
    """Run the app in this terminal until it is closed; the CLI's exit code."""
    from gradviz.runtime.deep_graphs import WORKER_STACK_BYTES

    # Layout workers may drop the last reference to a deep graph: give new threads room.
    threading.stack_size(WORKER_STACK_BYTES)
    app = make_app(scenario, **kwargs)
    app.run()
    return app.return_code or 0
