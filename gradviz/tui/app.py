"""GradvizApp: PyTorch's backward, one node at a time, in the terminal.

The app renders; it decides nothing and mirrors nothing. Where things stand lives in
the session's :class:`~gradviz.model.state.SessionState` (a key goes to
``state.request``, which starts it, queues it, pauses or refuses it with the reason),
what ran lives in the session's :class:`~gradviz.model.progress.BackwardProgress`
(the graph view reads each row's state from it as it draws). Torch work runs on one
:class:`~gradviz.runtime.serial_worker.SerialWorker` thread through
:mod:`gradviz.tui.jobs`, which posts plain data back (:mod:`gradviz.tui.messages`).
This module imports no torch, so the first frame shows at once while torch loads.
"""

from __future__ import annotations

import functools
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from gradviz.errors import one_line
from gradviz.model.catalog import BUILTIN_NAMES, builtin_scenarios
from gradviz.model.find import find_nodes
from gradviz.model.layout import GROUP, GraphLayout
from gradviz.model.progress import BackwardProgress, group_progress
from gradviz.model.state import Action, Activity, Failure, Phase, SessionState, Verdict
from gradviz.model.views import node_view
from gradviz.runtime.serial_worker import SerialWorker
from gradviz.tui import jobs, messages
from gradviz.tui.screens.help import HELP_KEYS, HelpScreen
from gradviz.tui.screens.picker import PickerScreen
from gradviz.tui.screens.run_view import RunScreen
from gradviz.tui.widgets.checks import ChecksPanel
from gradviz.tui.widgets.footer import KeysFooter
from gradviz.tui.widgets.forward_log import ForwardLog, forward_step_lines
from gradviz.tui.widgets.graph_view import GraphView
from gradviz.tui.widgets.inspector import Inspector
from gradviz.tui.widgets.params_table import ParamsTable
from gradviz.tui.widgets.plots import GradFlow, LossPlot
from gradviz.tui.widgets.status_bar import StatusBar
from gradviz.tui.widgets.run_so_far import RunSoFar

if TYPE_CHECKING:
    from gradviz.model.runs.events import TrainingPause

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
        Binding("i", "mute_breaks", "no more", id="mute-breaks"),
        Binding("r", "run_so_far", "run", id="run-so-far", show=False),
        Binding("q", "quit", "quit", id="quit"),
    ]

    def __init__(self, scenario: str | None = None, *, weights: str | None = None,
                 session: Any = None, export_dir: str | Path = ".",
                 pause: TrainingPause | None = None, files: bool = True) -> None:
        super().__init__()
        # False under gradviz serve: the page may open the scenario it was started with
        # and the built-in demos, no file by its path (that would run any .py file).
        self.files = files
        self.pause = pause  # a gradviz.watch break opened the app: its run, a way to stop it
        if pause is not None:
            session = pause.session
        self.scenario_ref = scenario
        self.weights = weights
        self.session: Any = session  # a gradviz.session.Session: read as plain data only
        self.state = session.state if session is not None else SessionState()
        self.state.subscribe(lambda view: self.post_message(messages.StateChanged()))
        self.engine = SerialWorker(
            on_error=lambda error: self.post_message(messages.EngineFailed(error)))
        self.export_dir = Path(export_dir)
        self.fold_depth: int | None = None
        self.opened: set[str] = set()
        self._cli_open = False  # the scenario named on the command line is what was opened
        self._shown_graph: Any = None
        self._progress = BackwardProgress()  # what ran on the graph shown (the session's)
        # parameters whose .grad landed since drawn, in the order they landed: the table's
        # cursor follows the last (a set's order put it on any of them, run to run)
        self._params_to_draw: dict[str, None] = {}
        self._flow_dirty = False
        self._follow: str | None = None  # the node to inspect when the panels are drawn
        self._failure_shown: Any = None  # the failure whose node was selected
        self._panels_timer: Any = None
        self._busy_timer: Any = None
        self._visible_timer: Any = None
        self._inspected: str | None = None
        self._rendered_version = -1
        self._enabled: tuple[bool, ...] = ()
        self._layout_worker: SerialWorker | None = None  # made on the first re-layout
        self._found: tuple[str, list[str], int] | None = None  # query, matches, the one shown
        self._warmed = False  # torch's first backward was run ahead of the first step

    @property
    def shown_graph(self):
        """The graph on screen (a new one shows once laid out, off the UI thread)."""
        return self._shown_graph

    @property
    def progress(self) -> BackwardProgress:
        """What ran on the graph on screen: the session's own record of it."""
        return self._progress

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
        with Horizontal(id="find-bar"):
            yield Input(placeholder="find: op, module or parameter name (enter: next)", id="find")
            yield Static(id="find-count")
        yield StatusBar(id="status")
        yield KeysFooter(compact=True)

    def on_mount(self) -> None:
        self.query_one("#graph").border_title = "autograd graph (root at the top)"
        self.query_one("#inspector").border_title = "node"
        self.query_one("#tabs").border_title = "parameters and optimizer"
        self.query_one("#checks").border_title = "checks"
        # tab goes graph -> node inspector -> parameters, as the help and README say: the
        # strip of tab names above the table was a stop of its own, where enter did nothing
        self.query_one("#tabs Tabs").can_focus = False
        self.query_one("#find-bar").display = False
        self._narrow(self.size.width, self.size.height)
        if self.pause is not None:
            self.add_class("-paused")
            self.query_one(RunSoFar).show(self.pause.history, self.pause.brk)
        if self.session is not None:  # a graph from gradviz.show()
            self._adopt(self.session)
            self._lay_out(self.session, self.fold_depth, frozenset())
        elif self.scenario_ref is not None:
            self.open_scenario(self.scenario_ref, weights=self.weights, from_cli=True)
        else:
            self.action_picker()
        self._render_state()

    # ------------------------------------------------------------------ opening
    def open_scenario(self, ref: str, *, weights: str | None = None,
                      from_cli: bool = False) -> None:
        """Load ``ref`` on the engine's thread; what is shown stays until it has loaded."""
        if not self.files and ref not in (*BUILTIN_NAMES, self.scenario_ref):
            self.notify("this app opens the built-in demos and the scenario it was started "
                        "with, no file by its path (gradviz serve --allow-files)",
                        severity="warning", timeout=5)
            return
        if self.state.view().busy:
            self.state.request(Action.STOP)  # the running work ends first, then this
        self._cli_open = from_cli
        self._submit(jobs.load, self.state, ref, weights, self.fold_depth,
                     frozenset(self.opened))

    def _submit(self, job, *args, **kwargs) -> None:
        """Run ``job(post, *args, **kwargs)`` on the engine's thread."""
        self.engine.submit(functools.partial(job, self.post_message, *args, **kwargs))

    def on_loaded(self, message: messages.Loaded) -> None:
        old, self.session = self.session, message.session
        if old is not None and old is not message.session:
            old.detach()  # its closing must not touch the state the new session now owns
            self.engine.submit(functools.partial(jobs.close, old))
        self._adopt(message.session)
        self._render_state(force=True)

    def _adopt(self, session: Any) -> None:
        """Show a session that has loaded: its parameters, optimizer and (soon) its graph."""
        session.on_new_graph = self._lay_out_on_engine
        self.query_one(ParamsTable).show_params(session.param_rows())
        title = session.optimizer_title()
        self.query_one("#tabs").border_title = "parameters and optimizer" + (
            f": {title}" if title else "")

    # ------------------------------------------------------------------ graphs
    def _lay_out_on_engine(self, session: Any) -> None:
        """Engine thread, after a forward: lay the new graph out before the screen asks."""
        jobs.lay_out_graph(self.post_message, session, self.fold_depth, frozenset(self.opened))

    def _lay_out(self, session: Any, depth: int | None, opened: frozenset) -> None:
        """Lay the graph out again (folding, a group opened) off the UI thread.

        Plain Python (networkx), on the app's own layout thread rather than Textual's
        ``@work(thread=True)``: those run on the event loop's default executor, and a
        layout may drop the last reference to a deep graph, which needs a big stack.
        Giving the executor's threads one meant ``threading.stack_size`` for the whole
        process, which in a Jupyter kernel is every thread the kernel makes later. The
        layout thread is not the engine's, so folding stays quick while backward runs.
        """
        if self._layout_worker is None:
            self._layout_worker = SerialWorker(
                "gradviz-layout",
                on_error=lambda error: self.post_message(messages.EngineFailed(error)))
        self._layout_worker.submit(
            functools.partial(jobs.lay_out_graph, self.post_message, session, depth, opened))

    def on_laid_out(self, message: messages.LaidOut) -> None:
        session, laid_out, progress = message.session, message.laid_out, message.progress
        if (session is not self.session or laid_out.graph is not session.graph
                or progress.graph is not laid_out.graph):
            return  # an old graph's layout arrived after a newer one
        if laid_out.folded and self.fold_depth is None:
            self.fold_depth = 1
        view = self.query_one(GraphView)
        new_graph = self._shown_graph is not laid_out.graph
        if new_graph:
            self._shown_graph = laid_out.graph
            self._progress = progress
            self._found = None  # matches are of a graph
            self._params_to_draw = {}
            self._flow_dirty = False
            self._follow = None
            view.follow = True
        view.show_layout(laid_out)
        view.show_progress(self._progress)
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
            if not self._warmed and self.pause is None:  # once the first graph is on screen
                self._warmed = True
                self._submit(jobs.warm_up, session)
        self._render_state(force=True)

    def _describe_visible(self) -> None:
        """The nodes in sight that ran without their |g| read: read them (not while the
        engine is busy: then it comes when the work ends)."""
        self._visible_timer = None
        if not self.is_running or self.session is None or self.state.view().busy:
            return  # (not running: quitting, its screen may be gone before its timers)
        missing = self._progress.unread(self.query_one(GraphView).visible_keys())
        if missing:
            self._submit(jobs.read_nodes, self.session, missing)

    def on_graph_view_scrolled(self, message: GraphView.Scrolled) -> None:
        if self._visible_timer is None:
            self._visible_timer = self.set_timer(0.15, self._describe_visible)

    # ------------------------------------------------------------------ engine's news
    def on_progress_made(self, message: messages.ProgressMade) -> None:
        if message.session is not self.session or message.progress is not self._progress:
            return
        delta = message.delta
        self._params_to_draw.update(dict.fromkeys(delta.params))
        self._flow_dirty = self._flow_dirty or bool(delta.params)
        view = self.query_one(GraphView)
        view.show_progress(self._progress, delta.nodes)
        if view.follow:
            self._follow = delta.pending or delta.last
            if delta.pending is None and delta.last is not None:  # the end: show the last node
                view.mark_node(delta.last)
        # A step draws the panels at once. While backward runs on, they are drawn four
        # times a second: the inspector's new height lays out the whole screen, and the
        # table and the plot cost a frame each; per slice, they slowed the engine (the GIL).
        running = self.state.view().activity in (Activity.CONTINUING, Activity.TRAINING)
        if delta.finished or not running:
            self._draw_panels()
        elif self._panels_timer is None:
            self._panels_timer = self.set_timer(PANELS_EVERY, self._draw_panels)
        if delta.finished:
            self._show_checks()

    def _draw_panels(self) -> None:
        """The parameters table, the gradient-flow plot and the followed node."""
        if self._panels_timer is not None:
            self._panels_timer.stop()
        self._panels_timer = None
        if not self.is_running or self.session is None:
            return
        if self._params_to_draw:
            params = self.query_one(ParamsTable)
            for name in self._params_to_draw:
                summary = self._progress.grad_of(name)
                if summary is not None:
                    params.show_grad(name, summary)
            self._params_to_draw = {}
        if self._flow_dirty:
            self._flow_dirty = False
            flow = self._progress.flow()
            order = [row.name for row in self.session.param_rows()]
            for plot in self.query(GradFlow):  # none once the app is closing
                plot.show_flow([(name, flow[name]) for name in order if name in flow])
        if self._follow is not None:
            key, self._follow = self._follow, None
            if self.query_one(GraphView).follow:  # not if the user has moved since
                self._inspect(key)

    def on_nodes_read(self, message: messages.NodesRead) -> None:
        if message.session is not self.session or message.progress is not self._progress:
            return
        view = self.query_one(GraphView)
        view.show_progress(self._progress, message.keys)
        for key in (view.row_key(view.cursor), self._inspected):
            if key in message.keys:
                self._inspect(key)
                break

    def on_data_table_row_selected(self, event) -> None:
        """Enter on a parameter: the inspector says what it is and, without a .grad, why."""
        if event.data_table.id != "params" or self.session is None:
            return
        self._submit(jobs.describe_param, self.session, str(event.row_key.value))

    def on_param_described(self, message: messages.ParamDescribed) -> None:
        self._inspected = None
        self.query_one(Inspector).show_param(message.view)

    def on_engine_failed(self, message: messages.EngineFailed) -> None:
        """Say so on screen (and in Textual's log, with the traceback); never leave a spinner."""
        self.log.error("".join(traceback.format_exception(message.error)))
        view = self.state.view()
        failure = Failure(view.activity, f"internal error: {one_line(message.error)} "
                                         "(please report it)", hint="q quits; p opens another")
        if view.activity is Activity.LOADING:
            self.state.load_failed(failure)
        else:
            self.state.failed(failure)

    def on_forward_stepped(self, message: messages.ForwardStepped) -> None:
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
            self._shown_graph = step.laid_out.graph
            self._progress = step.as_progress()
            view = self.query_one(GraphView)
            view.placeholder = ("no node yet: the operations so far need no gradient, so "
                                "autograd records nothing for them")
            view.show_layout(step.laid_out)
            view.show_progress(self._progress)
            if step.new_nodes:
                view.mark_node(step.new_nodes[0])
        self.query_one(Inspector).show_lines(forward_step_lines(step))
        self._render_state(force=True)

    def on_update_made(self, message: messages.UpdateMade) -> None:
        if message.session is self.session:
            self.query_one(ParamsTable).show_update(message.report)

    def _show_checks(self) -> None:
        if self.session is not None:
            expected = self.session.expected_checks
            self.query_one(ChecksPanel).show_checks(list(self.session.checks), expected)
            self.set_class(not expected, "-no-checks")

    def _inspect(self, key: str | None) -> None:
        if key is None or self.session is None or self._shown_graph is None:
            return
        self._inspected = key
        inspector = self.query_one(Inspector)
        if key.startswith(GROUP):
            group = group_progress(self._progress, self.query_one(GraphView).members.get(key, ()))
            inspector.show_group(key.removeprefix(GROUP), group.members, group.run)
            return
        if key not in self._shown_graph:
            return
        view = node_view(key, self._shown_graph, self._progress)
        if view.reading and self._progress.unread([key]):
            self._submit(jobs.read_nodes, self.session, [key])  # shown once read
        inspector.show_node(view)

    # ------------------------------------------------------------------ drawing the state
    def on_state_changed(self, message: messages.StateChanged) -> None:
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
        if not view.busy and self._visible_timer is None and self._progress.done:
            self._visible_timer = self.set_timer(0.05, self._describe_visible)
        self._render_status(view)
        self._render_welcome(view)
        failure = view.failure
        inspector = self.query_one(Inspector)
        inspector.show_failure(failure.message if failure else "", failure.hint if failure else "")
        graph_view = self.query_one(GraphView)
        if (failure is not None and failure.node and self._shown_graph is not None
                and failure.node in self._shown_graph and self._failure_shown is not failure):
            self._failure_shown = failure
            graph_view.show_progress(self._progress, {failure.node})
            graph_view.select_node(failure.node)
        if view.phase is Phase.FAILED or view.phase is Phase.ABORTED:
            graph_view.show_progress(self._progress)  # nothing waits any more
        if view.phase is Phase.NONE and not view.busy and self._shown_graph is not None:
            self._clear_graph()  # a stepped forward abandoned (esc): its partial graph goes
        # The footer rebuilds its keys on every refresh (about 10 ms): only when one changes.
        enabled = tuple(bool(self.check_action(b.action, ())) for b in self.BINDINGS)
        if enabled != self._enabled:
            self._enabled = enabled
            self.refresh_bindings()

    def _clear_graph(self) -> None:
        self._shown_graph = None
        self._progress = BackwardProgress()
        graph_view = self.query_one(GraphView)
        graph_view.placeholder = "no graph: f a forward pass, s one operation at a time"
        graph_view.show_layout(GraphLayout(graph_view.graph, [], {}, {}, 0))
        graph_view.show_progress(self._progress)
        self.query_one(Inspector).show_text(Text("no graph yet", "grey50"))

    def _show_busy(self) -> None:
        self._busy_timer = None
        if self.is_running and self.state.view().activity in _QUICK:
            self._render_state(force=True)

    def _render_status(self, view) -> None:
        self.query_one(StatusBar).show(view, self._shown_graph)

    def _render_welcome(self, view) -> None:
        """With nothing loaded, the screen says what is loading, what failed, what to do."""
        welcome = self.query_one("#welcome", Static)
        empty = self.session is None
        self.set_class(empty, "-empty")
        if not empty:
            return
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
        if action in ("stop_training", "run_so_far", "mute_breaks"):
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
        if decision.verdict is Verdict.START:
            if action in (Action.STEP, Action.CONTINUE, Action.TRAIN):
                self.query_one(GraphView).follow = True
            options = {}
            if action in (Action.CONTINUE, Action.STEP, Action.TRAIN):
                options["chunk_seconds"] = FRAME_SECONDS
            if action is Action.CONTINUE and self.state.view().nodes:
                if self.state.view().nodes <= ANIMATE_UP_TO:
                    options["animate_seconds"] = ANIMATE_SECONDS
                else:
                    options["chunk_seconds"] = BIG_FRAME_SECONDS
            if action is Action.EXPORT:
                options["folder"] = self.export_dir
            self._submit(jobs.perform, self.session, action, **options)
        elif decision.verdict is Verdict.REFUSED:
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
        bar = self.query_one("#find-bar")
        if bar.display:
            bar.display = False
            self.query_one(GraphView).focus()
            return
        view = self.state.view()
        if view.phase is Phase.FORWARD and not view.busy and self.session is not None:
            self.engine.submit(functools.partial(jobs.abandon_forward, self.session))  # esc
            return
        if self.state.request(Action.STOP).verdict is Verdict.REFUSED:
            self.state.dismiss_failure()

    def action_picker(self) -> None:
        choices = [(info.name, info.description) for info in builtin_scenarios()]
        if not self.files and self.scenario_ref and self.scenario_ref not in BUILTIN_NAMES:
            choices.insert(0, (self.scenario_ref, "the scenario this app was started with"))
        self.push_screen(PickerScreen(choices, files=self.files), self._picked)

    def _picked(self, ref: str | None) -> None:
        if ref:
            self.open_scenario(ref)

    def action_modules(self) -> None:
        if self.session is None or self._shown_graph is None:
            return
        if not any(attrs.get("module") for _, attrs in self._shown_graph.nodes(data=True)):
            self.notify("this graph has no module names to fold by: they come from a forward "
                        "run under gradviz.record(model), or a scenario with a model", timeout=5)
            return
        self.fold_depth = None if self.fold_depth else 1
        self.opened.clear()
        self._lay_out(self.session, self.fold_depth, frozenset())

    def action_find(self) -> None:
        self.query_one("#find-bar").display = True
        self.query_one("#find", Input).focus()

    def action_stop_training(self) -> None:
        """Close the app and stop the watched loop: it raises TrainingStopped there."""
        if self.pause is not None:
            self.pause.request_stop()
            self.action_quit()

    def action_mute_breaks(self) -> None:
        """No more breaks of this kind for the rest of the run (closing resumes training)."""
        if self.pause is not None and not self.pause.mute_requested:
            self.pause.request_mute()
            kind = self.pause.brk.reason
            self.notify(f"no more {getattr(kind, 'value', kind)} breaks in this run: they are "
                        "still recorded (q resumes training)", timeout=5)

    def action_run_so_far(self) -> None:
        if self.pause is not None:
            self.push_screen(RunScreen(self.pause.history,
                                       source=f"break at iteration {self.pause.brk.iteration}"))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_quit(self) -> None:
        self.shut_down()
        self.exit(return_code=1 if self.failed_from_cli else 0)

    @property
    def failed_from_cli(self) -> bool:
        """The scenario named on the command line did not load, and nothing else did."""
        return (self._cli_open and self.session is None
                and self.state.view().failure is not None)

    def on_unmount(self) -> None:
        self.shut_down()  # however the app ends, no backward is left waiting

    def shut_down(self) -> None:
        """Stop what runs and end the app's threads (also for an app that never ran:
        a notebook output removed before a page showed it)."""
        if self.state.view().busy:
            self.state.request(Action.STOP)
        if self.session is not None:
            self.session.close()  # the engine stops at its next node; its thread ends
        # Let the engine finish what it runs (stopped at its next node or torch call,
        # an old session's close): a daemon thread still inside torch when Python
        # finalizes aborts the process ("terminate called without an active exception",
        # exit 134), seen on quitting right after opening a second scenario.
        self.engine.shutdown(timeout=ENGINE_EXIT_SECONDS)
        if self._layout_worker is not None:
            self._layout_worker.shutdown(timeout=ENGINE_EXIT_SECONDS)
        if self.pause is not None:
            self.pause.closed()  # the model's .grad put back (a break's graph was stepped)

    def on_resize(self, event) -> None:
        self._narrow(event.size.width, event.size.height)

    def _narrow(self, width: int, height: int) -> None:
        """On the app, not a screen: the main screen follows even while a dialog is open."""
        self.set_class(width < 100 or height < 30, "-narrow")
        for footer in self.query(Footer):  # under 90 columns "^p palette" squeezed "q quit" off
            footer.show_command_palette = width >= 90

    def on_input_changed(self, event: Input.Changed) -> None:
        """The count follows the query as it is typed (it stayed at the last enter's)."""
        if event.input.id != "find":
            return
        self._found = None
        count = self.query_one("#find-count", Static)
        if self._shown_graph is None or not event.value.strip():
            count.update("")
            return
        matches = find_nodes(self._shown_graph, event.value)
        count.update(f"{len(matches)} match" + ("es" if len(matches) > 1 else "") if matches
                     else "no match")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter: the best match, then the next one (exact, then whole words, then parts)."""
        if event.input.id != "find" or self._shown_graph is None:
            return
        view = self.query_one(GraphView)
        if self._found is None or self._found[0] != event.value:
            self._found = (event.value, find_nodes(self._shown_graph, event.value, view.row_of),
                           -1)
        query, matches, index = self._found
        count = self.query_one("#find-count", Static)
        if not matches:
            count.update("no match")
            return
        index = (index + 1) % len(matches)
        self._found = (query, matches, index)
        view.select_node(matches[index])
        count.update(f"{index + 1} of {len(matches)}: {matches[index]}")

    def on_graph_view_node_selected(self, message: GraphView.NodeSelected) -> None:
        self._inspect(message.key)

    def on_graph_view_group_opened(self, message: GraphView.GroupOpened) -> None:
        if self.session is None:
            return
        self.opened.add(message.module)
        self._lay_out(self.session, self.fold_depth, frozenset(self.opened))

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
        for info in builtin_scenarios():
            yield SystemCommand(f"Open demo {info.name}", info.description,
                                functools.partial(self.open_scenario, info.name))


def make_app(scenario: str | None = None, **kwargs) -> GradvizApp:
    """The one factory for the CLI and the tests (so both get the same app)."""
    return GradvizApp(scenario, **kwargs)


def run_app(scenario: str | None = None, **kwargs) -> int:
    """Run the app in this terminal until it is closed; the CLI's exit code."""
    app = make_app(scenario, **kwargs)
    app.run()
    return app.return_code or 0
