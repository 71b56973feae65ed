"""The run search language (query/search.py) against a brute-force reading of it.

The evaluator here is plain Python over each row's stored value, written from the
rules in docs/SEARCH.md, not from the module: Hypothesis builds random run sets (params
of mixed kinds turned into columns by query/runs.py's ``param_columns``, NaN metrics,
odd names) and random expression trees, renders each tree as text, and compares the
rows ``select`` keeps and orders with the rows the evaluator keeps and orders. Fixed
cases follow: MLflow's documented filters, every syntax error with its caret, order_by
and limit.
"""

from __future__ import annotations

import datetime as dt
import math
import re

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from steplog.engine.errors import InvalidArgumentError, InvalidTypeError
from steplog.engine.catalog import flatten
from steplog.query.runs import RUN_TIME_TYPE, param_columns
from steplog.query.search import OrderKey, Ref, parse_filter, parse_order_by, select

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------- a table of runs

class Runs:
    """Runs as per-ref arrays (what the catalog gives ``select``), and each row's stored
    value read back from those arrays (what the brute-force evaluator reads)."""

    def __init__(self, params: list[dict], metrics: list[dict] | None = None, attributes: list[dict] | None = None,
                 tags: list[dict] | None = None):
        self.n = len(params)
        self.arrays: dict[Ref, list[pa.Array]] = {}
        for kind, rows in (("param", params), ("tag", tags or [{}] * self.n)):
            flat = [flatten(row, "") for row in rows]
            for key in sorted({k for row in flat for k in row}):
                columns = param_columns(f"{kind}s.{key}", [row.get(key) for row in flat])
                self.arrays[Ref(kind, key)] = [array for _, array in columns]
        for ref in {ref for row in metrics or [] for ref in row}:
            values = [row.get(ref) for row in metrics]
            self.arrays[ref] = [pa.array(values, pa.int64() if ref.agg == "count" else pa.float64())]
        for name in {name for row in attributes or [] for name in row}:
            values = [row.get(name) for row in attributes]
            type = RUN_TIME_TYPE if name in ("start_time", "end_time") else pa.string()
            self.arrays[Ref("attribute", name)] = [pa.array(values, type)]
        self.asked: list[Ref] = []

    def columns(self, ref: Ref) -> list[pa.Array]:
        self.asked.append(ref)
        return self.arrays.get(ref, [pa.nulls(self.n)])

    def value(self, ref: Ref, row: int):
        """The row's stored value: the one non-null among the ref's arrays (or None)."""
        for array in self.arrays.get(ref, []):
            value = array[row].as_py()
            if value is not None:
                return (value - EPOCH) // dt.timedelta(microseconds=1) if isinstance(value, dt.datetime) else value
        return None

    def select(self, where, order_by=None, limit=None) -> list[int]:
        return select(parse_filter(where), parse_order_by(order_by), limit, self.columns, self.n).tolist()


# ---------------------------------------------------------------- the brute-force reading

NUMBER_TEXT = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.I)
COMPARE = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
           "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def text_of(value) -> str:
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is float:
        return repr(value)
    return str(value)


def like(text: str, pattern: str, ignore_case: bool) -> bool:
    regex, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            regex.append(re.escape(pattern[i + 1] if i + 1 < len(pattern) else "\\"))
            i += 2
            continue
        regex.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.fullmatch("".join(regex), text, re.S | (re.I if ignore_case else 0)) is not None


def equal_or_ordered(value, op: str, literal, fold: bool, time: bool) -> bool:
    """One present value against one literal with = < <= > >= (never !=)."""
    if time and type(literal) in (int, float):
        literal = literal * 1000   # ms -> the stored microseconds
    if type(literal) is bool:
        if type(value) is bool:
            return value == literal
        return type(value) is str and value.lower() == text_of(literal)
    if type(literal) in (int, float):
        if type(value) is bool:
            return False
        if type(value) is str:
            if not NUMBER_TEXT.fullmatch(value):
                return False
            value = float(value)
        return COMPARE[op](value, literal)
    if isinstance(literal, Time):
        return type(value) is int and COMPARE[op](value, literal.us)
    if time:
        return False
    text = text_of(value)
    if fold or (type(value) is bool and op == "="):
        text, literal = text.lower(), literal.lower()
    return COMPARE[op](text, literal)


class Time(tuple):
    """An ISO-8601 literal in a test tree; ``us`` is its instant in microseconds."""
    @property
    def us(self) -> int:
        return (self[0] - EPOCH) // dt.timedelta(microseconds=1)


def clause_keeps(runs: Runs, row: int, ref: Ref, op: str, literals: list) -> bool:
    value = runs.value(ref, row)
    if op == "is null":
        return value is None
    if op == "is not null":
        return value is not None
    if value is None:
        return False
    fold = ref == Ref("attribute", "status")
    time = ref.kind == "attribute" and ref.key in ("start_time", "end_time")
    negated = op.startswith("not ") or op == "!="
    base = {"!=": "=", "not in": "in", "not like": "like", "not ilike": "ilike"}.get(op, op)
    if base in ("like", "ilike"):
        kept = like(text_of(value), literals[0], base == "ilike" or fold)
    elif base == "in":
        kept = any(equal_or_ordered(value, "=", lit, fold, time) for lit in literals)
    else:
        kept = equal_or_ordered(value, base, literals[0], fold, time)
    return kept != negated


def tree_keeps(runs: Runs, row: int, tree) -> bool:
    head = tree[0]
    if head == "and":
        return all(tree_keeps(runs, row, part) for part in tree[1:])
    if head == "or":
        return any(tree_keeps(runs, row, part) for part in tree[1:])
    if head == "not":
        return not tree_keeps(runs, row, tree[1])
    return clause_keeps(runs, row, *tree[1:])


def brute_order(runs: Runs, rows: list[int], keys: list[tuple[Ref, bool]]) -> list[int]:
    """Stable sorts from the last key to the first: present values (numbers, then bools,
    then text) up or down, then NaN, then nulls, each keeping the order it had."""
    for ref, descending in reversed(keys):
        values = {row: runs.value(ref, row) for row in rows}
        nulls = [r for r in rows if values[r] is None]
        nans = [r for r in rows if type(values[r]) is float and math.isnan(values[r])]
        present = [r for r in rows if r not in nulls and r not in nans]

        def rank(row):
            value = values[row]
            return (1, value) if type(value) is bool else (2, value) if type(value) is str else (0, value)

        rows = sorted(present, key=rank, reverse=descending) + nans + nulls
    return rows


# ---------------------------------------------------------------- rendering a tree as text

def render_name(segment: str, quote: str) -> str:
    if re.fullmatch(r"[\w/\-]+", segment) and quote == "":
        return segment
    quote = quote or "`"
    return quote + segment.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def render_ref(ref: Ref, style) -> str:
    if ref.kind == "attribute":
        return f"attributes.{ref.key}" if style[0] else ref.key
    prefix = {"param": "params", "tag": "tags", "metric": "metrics"}[ref.kind]
    if ref.kind != "metric":
        parts = ref.key.split(".") if style[0] else [ref.key]
        return prefix + "." + ".".join(render_name(p, style[1] if len(parts) == 1 else "") for p in parts)
    name = render_name(ref.key, "" if re.fullmatch(r"[\w/\-]+", ref.key) else '"')
    context = "{" + ", ".join(f"{k}='{v}'" if style[0] else f"{k}={v}" for k, v in ref.context) + "}"
    agg = "" if ref.agg == "last" and style[1] == "" else "." + ref.agg
    return f"metrics.{name}" + (context if ref.context else "") + agg


def render_literal(literal) -> str:
    if type(literal) is bool:
        return "TRUE" if literal else "false"
    if isinstance(literal, Time):
        return f"'{literal[0].isoformat()}'"
    if type(literal) in (int, float):
        return repr(literal)
    if "'" in literal and '"' not in literal:
        return '"' + literal.replace("\\", "\\\\") + '"'
    return "'" + literal.replace("\\", "\\\\").replace("'", "''") + "'"


def render(tree, style) -> str:
    head = tree[0]
    if head in ("and", "or"):
        return "(" + f" {head.upper() if style[0] else head} ".join(render(p, style) for p in tree[1:]) + ")"
    if head == "not":
        return f"not ({render(tree[1], style)})"
    _, ref, op, literals = tree
    text = f"{render_ref(ref, style)} {op.upper() if style[0] else op}"
    if op in ("in", "not in"):
        return text + " (" + ", ".join(render_literal(lit) for lit in literals) + ")"
    return text if op.startswith("is") else text + " " + render_literal(literals[0])


# ---------------------------------------------------------------- strategies

TEXTS = ["adam", "Adam", "1", "1.5", "-2", "nan", "1e3", "", "0.0", "-0.0", "0.5", "True", "true", "a%b", "ab_c", "x'y", 'q"', "b\\",
         "ünï", "日本"]
NUMBERS = [0, 1, -2, 3, 2**62, -(2**63), 0.5, -0.0, 1.5, 1e20, 1e-5, math.nan, math.inf, -math.inf]
METRIC_VALUES = [0.5, -0.0, 0.0, 1.5, 2.0, 1e20, 1e-5, math.nan, math.inf, -math.inf]
PATTERNS = ["%", "a%", "%b", "_", "a_b%", "%1%", "A%", "%\\%%", "ab\\_c", "%ü%", "b\\", "tru_", ""]
PARAM_KEYS = ["lr", "opt", "model.depth", "my key", "a-b", "ünï", "x/y"]
METRICS = [Ref("metric", name, agg, ctx) for name in ("loss", "train/loss", "loss.min", "min")
           for agg in ("last", "min", "count") for ctx in ((), (("subset", "val"),))]
STATUSES = ["finished", "failed", "running", "crashed"]

param_value = st.one_of(st.none(), st.sampled_from(NUMBERS), st.sampled_from(TEXTS), st.booleans(),
                        st.integers(-3, 3), st.lists(st.integers(0, 2), max_size=2))
times = st.datetimes(min_value=dt.datetime(2023, 1, 1), max_value=dt.datetime(2024, 1, 1), timezones=st.just(UTC))


def nest(flat: dict) -> dict:
    """{"model.depth": 1} -> {"model": {"depth": 1}}: the way a user would log it."""
    nested: dict = {}
    for key, value in flat.items():
        if "." in key:
            head, tail = key.split(".", 1)
            nested.setdefault(head, {})[tail] = value
        else:
            nested[key] = value
    return nested


@st.composite
def run_sets(draw):
    n = draw(st.integers(1, 12))
    params = [nest({k: v for k in PARAM_KEYS if (v := draw(param_value)) is not None}) for _ in range(n)]
    metrics = []
    for _ in range(n):
        row = {}
        for ref in METRICS:
            if draw(st.booleans()):
                row[ref] = draw(st.integers(0, 3)) if ref.agg == "count" else draw(st.sampled_from(METRIC_VALUES))
        metrics.append(row)
    attributes = [{"status": draw(st.sampled_from(STATUSES + [None])), "start_time": draw(st.one_of(st.none(), times)),
                   "name": draw(st.sampled_from(TEXTS[:4]))} for _ in range(n)]
    return Runs(params, metrics, attributes)


def literal_for(ref: Ref, op: str):
    if op in ("like", "ilike", "not like", "not ilike"):
        return st.sampled_from(PATTERNS)
    if ref.key == "start_time":
        return st.one_of(st.builds(lambda t: Time((t,)), times),
                         st.builds(lambda t: (t - EPOCH) // dt.timedelta(milliseconds=1), times))
    if ref.key == "status":
        return st.sampled_from(STATUSES + ["FINISHED", "Crashed"])
    kinds = [st.sampled_from(NUMBERS), st.sampled_from(TEXTS), st.integers(-3, 3)]
    if op in ("=", "!=", "in", "not in"):
        kinds.append(st.booleans())
    return st.one_of(kinds)


OPS = ["=", "!=", "<", "<=", ">", ">=", "like", "ilike", "not like", "not ilike", "in", "not in", "is null", "is not null"]
REFS = [Ref("param", k) for k in PARAM_KEYS] + [Ref("param", "nobody")] + METRICS + [
    Ref("attribute", "status"), Ref("attribute", "start_time"), Ref("attribute", "name")]


@st.composite
def clauses(draw):
    ref = draw(st.sampled_from(REFS))
    ops = [op for op in OPS if not (ref.key == "start_time" and "like" in op)]
    op = draw(st.sampled_from(ops))
    literal = literal_for(ref, op)
    if op.startswith("is"):
        return ("clause", ref, op, [])
    count = draw(st.integers(1, 3)) if op.endswith("in") else 1
    literals = [draw(literal) for _ in range(count)]
    if op in ("<", "<=", ">", ">="):
        literals = [lit if type(lit) is not bool else 0 for lit in literals]
    return ("clause", ref, op, literals)


trees = st.recursive(clauses(), lambda inner: st.one_of(
    st.tuples(st.sampled_from(["and", "or"]), inner, inner), st.tuples(st.just("not"), inner)), max_leaves=4)
styles = st.tuples(st.booleans(), st.sampled_from(["", "`", '"']))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=run_sets(), tree=trees, style=styles)
def test_select_keeps_what_the_brute_force_keeps(runs, tree, style):
    text = render(tree, style)
    expected = [row for row in range(runs.n) if tree_keeps(runs, row, tree)]
    event("keeps " + ("none" if not expected else "all" if len(expected) == runs.n else "some"))
    assert runs.select(text) == expected, text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=run_sets(), keys=st.lists(st.tuples(st.sampled_from(REFS), st.booleans()), min_size=1, max_size=3),
       style=styles, limit=st.one_of(st.none(), st.integers(0, 13)))
def test_order_by_sorts_as_the_brute_force_does(runs, keys, style, limit):
    items = [render_ref(ref, style) + (" DESC" if desc else " asc" if style[0] else "") for ref, desc in keys]
    expected = brute_order(runs, list(range(runs.n)), keys)[:limit]
    assert runs.select(None, items, limit) == expected, items


# ---------------------------------------------------------------- names and refs

@pytest.mark.parametrize("text, ref", [
    ("params.lr = 1", Ref("param", "lr")),
    ("param.lr = 1", Ref("param", "lr")),
    ("PARAMETER.lr = 1", Ref("param", "lr")),
    ("params.model.depth >= 50", Ref("param", "model.depth")),
    ('params."a.b" = 1', Ref("param", "a.b")),
    ("params.`my-param` = 1", Ref("param", "my-param")),
    ("params.my-param = 1", Ref("param", "my-param")),
    ('tags."my key" != \'x\'', Ref("tag", "my key")),
    ('tags."mlflow.source.type" = \'LOCAL\'', Ref("tag", "mlflow.source.type")),
    ("tag.mlflow.source.type = 'LOCAL'", Ref("tag", "mlflow.source.type")),
    ("metrics.val_loss < 0.2", Ref("metric", "val_loss", "last")),
    ("metric.train/loss < 0.2", Ref("metric", "train/loss", "last")),
    ("metrics.loss.min < 0.1", Ref("metric", "loss", "min")),
    ("metrics.loss.count > 3", Ref("metric", "loss", "count")),
    ('metrics."loss.min" < 0.1', Ref("metric", "loss.min", "last")),
    ('metrics."loss.min".max < 0.1', Ref("metric", "loss.min", "max")),
    ("metrics.loss.\"min\" < 0.1", Ref("metric", "loss.min", "last")),
    ("metrics.min < 0.1", Ref("metric", "min", "last")),
    ("metrics.loss{subset=val}.min < 1", Ref("metric", "loss", "min", (("subset", "val"),))),
    ("metrics.loss{}.max < 1", Ref("metric", "loss", "max")),
    ("metrics.loss{lr=0.5, tag=a/b-c}.first < 1", Ref("metric", "loss", "first", (("lr", "0.5"), ("tag", "a/b-c")))),
    ("metrics.loss{subset='val', rank=0} < 1", Ref("metric", "loss", "last", (("rank", "0"), ("subset", "val")))),
    ('metrics.loss{ rank = "0" ,subset=val } < 1', Ref("metric", "loss", "last", (("rank", "0"), ("subset", "val")))),
    ("attributes.status = 'finished'", Ref("attribute", "status")),
    ("attr.run_id = 'x'", Ref("attribute", "id")),
    ("run.run_name = 'x'", Ref("attribute", "name")),
    ("attribute.`Run Name` ILIKE '%alpha%'", Ref("attribute", "name")),
    ("`Run Name` = 'x'", Ref("attribute", "name")),
    ("resources.gpus >= 8", Ref("resource", "gpus")),
    ("kind = 'train'", Ref("attribute", "kind")),
    ("run_name = 'x'", Ref("attribute", "name")),
    ("attributes.experiment_id = 'x'", Ref("attribute", "experiment")),
    ("experiment = 'sweep'", Ref("attribute", "experiment")),
    ("attributes.Created > 1670628787527", Ref("attribute", "start_time")),
    ("attributes.end_time > 1670628787527", Ref("attribute", "end_time")),
    ("attributes.parent_run_id IS NULL", Ref("attribute", "parent")),
])
def test_names_read_as_refs(text, ref):
    assert parse_filter(text).refs == {ref}


def test_refs_of_a_compound_filter_and_of_an_ordering():
    found = parse_filter("(params.lr < 0.01 OR params.lr > 1) AND NOT tags.team = 'x' and metrics.loss.min < 1").refs
    assert found == {Ref("param", "lr"), Ref("tag", "team"), Ref("metric", "loss", "min")}
    assert parse_order_by("metrics.val_loss.min ASC") == [OrderKey(Ref("metric", "val_loss", "min"), False)]
    assert parse_order_by(["params.lr DESC", "attributes.start_time"]) == [
        OrderKey(Ref("param", "lr"), True), OrderKey(Ref("attribute", "start_time"), False)]
    assert parse_order_by(None) == [] and parse_filter(None).refs == frozenset()


def test_blank_filter_keeps_every_run_and_asks_for_nothing():
    runs = Runs([{"a": 1}, {"a": 2}, {}])
    for where in (None, "", "   \n"):
        assert runs.select(where) == [0, 1, 2]
    assert runs.asked == []


def test_columns_is_called_once_per_ref():
    runs = Runs([{"a": 1}, {"a": 2}, {}])
    assert runs.select("params.a = 1 or params.a = 2 or params.a is null", ["params.a DESC"]) == [1, 0, 2]
    assert runs.asked == [Ref("param", "a")]


# ---------------------------------------------------------------- semantics, case by case

def test_mlflow_documented_filters():
    runs = Runs(
        params=[{"model": "tree", "alpha": "0.3", "lambda": "0.001"}, {"model": "linear", "alpha": 0.3, "lambda": 0.001},
                {"model": "tree", "alpha": "0.5"}, {}],
        metrics=[{Ref("metric", "rmse", "last"): 0.5, Ref("metric", "error", "last"): 0.01,
                  Ref("metric", "f1 score", "last"): 0.7},
                 {Ref("metric", "rmse", "last"): 2.0, Ref("metric", "error", "last"): 0.04},
                 {Ref("metric", "rmse", "last"): 0.9, Ref("metric", "error", "last"): 0.2,
                  Ref("metric", "f1 score", "last"): 0.4}, {}],
        attributes=[{"status": "finished", "name": "alpha-1", "start_time": dt.datetime(2022, 12, 10, tzinfo=UTC)},
                    {"status": "failed", "name": "beta", "start_time": dt.datetime(2022, 12, 9, tzinfo=UTC)},
                    {"status": "finished", "name": "ALPHA-2", "start_time": None},
                    {"status": "running", "name": "gamma", "start_time": dt.datetime(2023, 1, 1, tzinfo=UTC)}],
        tags=[{"mlflow": {"source": {"type": "LOCAL"}, "user": "john@mlflow.com"}, "model": "sklearn-rf", "type": "LogisticRegression"},
              {"mlflow": {"source": {"type": "JOB"}}, "model": "torch", "type": "logistic"},
              {"model": "sklearn", "type": "svm"}, {}])
    cases = {
        "metrics.rmse < 1 and params.model = 'tree'": [0, 2],
        "metrics.accuracy > 0.92": [],
        'attributes.status = "FINISHED"': [0, 2],
        'attributes.status = "FAILED"': [1],
        "attributes.start_time > 1670628787527": [0, 3],     # 2022-12-09T23:33:07.527Z
        "attributes.created > 1670628787527": [0, 3],
        "metrics.`f1 score` > 0.5": [0],
        "tags.`mlflow.user` = 'john@mlflow.com'": [0],
        'tags."mlflow.source.type" = \'LOCAL\'': [0],
        "tags.`model` LIKE 'sklearn%'": [0, 2],
        "tags.`type` ILIKE '%Logistic%'": [0, 1],
        'attributes.`run_name` ILIKE "%alpha%"': [0, 2],
        "attributes.`Run name` IN ('alpha-1', 'beta', 'gamma')": [0, 1, 3],
        'params.alpha = "0.3" and params.lambda = "0.001" and metrics.error <= 0.05': [0, 1],
        "params.model = 'tree' OR params.model = 'linear'": [0, 1, 2],
        "params.model IS NULL": [3],
        "params.model IS NOT NULL and tags.mlflow.source.type IS NULL": [2],
        "attributes.status != 'running'": [0, 1, 2],
        "attributes.status NOT IN ('RUNNING', 'failed')": [0, 2],
    }
    for where, expected in cases.items():
        assert runs.select(where) == expected, where


def test_numbers_text_and_the_text_of_numbers():
    runs = Runs([{"v": 10}, {"v": "9"}, {"v": 1.0}, {"v": "adam"}, {"v": True}, {"v": 1e-5}, {"v": "1E-5"}, {}])
    # the floats make the typed column float64: 10 is kept as 10.0, and its text is "10.0"
    assert runs.select("params.v < 9.5") == [1, 2, 5, 6]   # "9" reads as 9: numbers, not "10" < "9" as text
    assert runs.select("params.v = '1.0'") == [2]           # repr(1.0), not Arrow's "1"
    assert runs.select("params.v = '10.0'") == [0]
    assert Runs([{"v": 10}, {"v": "x"}]).select("params.v = '10'") == [0]   # str() of an int
    assert runs.select("params.v = '1e-05'") == [5]
    assert runs.select("params.v like '1%'") == [0, 2, 5, 6]
    assert runs.select("params.v = 1e-5") == [5, 6]
    assert runs.select("params.v != 10") == [1, 2, 3, 4, 5, 6]   # every present value but 10; not the missing one
    assert runs.select("params.v not in (10, 'adam')") == [1, 2, 4, 5, 6]
    assert runs.select("not params.v = 10") == [1, 2, 3, 4, 5, 6, 7]   # NOT keeps what the clause drops, missing too


def test_bools_equal_true_false_and_their_text_in_any_case():
    runs = Runs([{"b": True}, {"b": False}, {"b": "TRUE"}, {"b": 1}, {}])   # the 1 puts the bools in the text column
    plain = Runs([{"b": True}, {"b": False}, {}])
    assert plain.select("params.b = true") == [0]
    assert plain.select("params.b = 'True'") == [0]          # MLflow keeps str(True)
    assert plain.select("params.b != FALSE") == [0]
    assert plain.select("params.b = 1") == []                 # a bool is no number
    assert runs.select("params.b = true") == [0, 2]           # text true, any case
    assert runs.select("params.b = 1") == [3]


def test_nan_and_inf_are_values():
    loss = Ref("metric", "loss", "last")
    runs = Runs([{}] * 5, metrics=[{loss: math.nan}, {loss: math.inf}, {loss: 0.5}, {}, {loss: -math.inf}])
    assert runs.select("metrics.loss < 1") == [2, 4]
    assert runs.select("metrics.loss > 1") == [1]
    assert runs.select("metrics.loss = nan") == []
    assert runs.select("metrics.loss != 0.5") == [0, 1, 4]    # NaN != 0.5, as IEEE says; missing: no
    assert runs.select("metrics.loss = inf or metrics.loss = -inf") == [1, 4]
    assert runs.select("metrics.loss is not null") == [0, 1, 2, 4]
    assert runs.select(None, ["metrics.loss"]) == [4, 2, 1, 0, 3]
    assert runs.select(None, ["metrics.loss DESC"]) == [1, 2, 4, 0, 3]


def test_big_ints_compare_exactly():
    runs = Runs([{"s": 2**62 + 1}, {"s": 2**62}, {"s": -(2**63)}, {"s": 7}])
    assert runs.select(f"params.s > {2**62}") == [0]
    assert runs.select(f"params.s = {2**62 + 1}") == [0]
    assert runs.select("params.s < 7.5 and params.s > 6.5") == [3]
    assert runs.select(f"params.s < {2**70}") == [0, 1, 2, 3]
    assert runs.select("params.s <= -1e30") == []
    floats = Runs([{"f": 2.0**53}, {"f": 2.0**53 + 2}, {"f": math.inf}, {"f": -math.inf}, {"f": math.nan}])
    assert floats.select(f"params.f = {2**53 + 1}") == []                  # no float64 holds 2**53 + 1
    assert floats.select(f"params.f < {2**53 + 1}") == [0, 3]
    assert floats.select(f"params.f >= {2**53 + 1}") == [1, 2]
    assert floats.select(f"params.f < {10**400}") == [0, 1, 3]             # past float64's range, below inf
    assert floats.select(f"params.f > {10**400}") == [2]
    assert floats.select(f"params.f >= {-10**400}") == [0, 1, 2]
    assert floats.select(f"params.f != {10**400}") == [0, 1, 2, 3, 4]


def test_times_compare_with_milliseconds_and_iso_strings():
    times = [dt.datetime(2024, 5, 1, 12, 0, 0, 500, tzinfo=UTC), dt.datetime(2024, 5, 2, tzinfo=UTC), None]
    runs = Runs([{}] * 3, attributes=[{"start_time": t, "end_time": t} for t in times])
    ms = int(dt.datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp() * 1000)
    assert runs.select(f"attributes.start_time > {ms}") == [0, 1]         # 500 us past the ms
    assert runs.select(f"attributes.start_time = {ms}") == []
    assert runs.select(f"attributes.start_time = {ms}.5") == [0]            # 500 us are 0.5 ms
    assert runs.select("start_time >= '2024-05-02'") == [1]
    assert runs.select("end_time < '2024-05-01T13:00:01+01:00'") == [0]   # a second past noon UTC
    assert runs.select("start_time = '2024-05-02T00:00:00Z'") == [1]
    assert runs.select("start_time is null") == [2]


def test_like_escapes_and_case():
    runs = Runs([{"p": "50%"}, {"p": "500"}, {"p": "a_b"}, {"p": "axb"}, {"p": "C:\\dir"}, {"p": "ÄB\nc"},
                 {"p": "end\\"}])
    assert runs.select(r"params.p like '50\%'") == [0]
    assert runs.select("params.p like '50%'") == [0, 1]
    assert runs.select(r"params.p like 'a\_b'") == [2]
    assert runs.select("params.p like 'a_b'") == [2, 3]
    assert runs.select(r"params.p = 'C:\\dir'") == [4]
    assert runs.select(r"params.p = 'C:\dir'") == [4]                     # a lone backslash stays
    assert runs.select("params.p ilike 'äb%'") == [5]                      # % crosses the newline
    assert runs.select("params.p like 'äb%'") == []
    assert runs.select("params.p not like '%0%'") == [2, 3, 4, 5, 6]
    assert runs.select("params.p not ilike 'A%'") == [0, 1, 4, 5, 6]
    assert runs.select(r"params.p like 'end\\'") == [6]                     # a trailing backslash is one
    assert runs.select(r"params.p like 'end'") == []


def test_quotes_inside_strings():
    runs = Runs([{"q": "it's"}, {"q": 'say "hi"'}, {"q": "back\\"}])
    assert runs.select("params.q = 'it''s'") == [0]
    assert runs.select(r"params.q = 'it\'s'") == [0]
    assert runs.select("params.q = \"it's\"") == [0]
    assert runs.select(r'params.q = "say \"hi\""') == [1]
    assert runs.select(r"params.q = 'back\\'") == [2]


def test_keywords_any_case_and_nested_parentheses():
    runs = Runs([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}, {"a": 3}])
    assert runs.select("((params.a = 1) oR (params.b In ('y')))") == [0, 1]
    assert runs.select("NoT (params.a = 1 AnD params.b = 'x')") == [1, 2]
    assert runs.select("not not params.a = 1") == [0]
    assert runs.select("params.a <> 1 and params.a == 2") == [1]
    assert runs.select("params.a >= 2 and params.b is NULL") == [2]
    assert runs.select("params.a > 1 or params.a < 1 and params.b = 'x'") == [1, 2]   # AND binds first


def test_a_ref_nobody_has():
    runs = Runs([{"a": 1}, {}])
    assert runs.select("params.nope = 1") == []
    assert runs.select("params.nope != 1") == []
    assert runs.select("params.nope is null") == [0, 1]
    assert runs.select("metrics.nope{a=b}.max < 1") == []


# ---------------------------------------------------------------- order_by and limit

def test_order_by_nulls_last_ties_stable_and_desc():
    runs = Runs([{"lr": 0.1, "opt": "b"}, {"opt": "a"}, {"lr": 0.01, "opt": "b"}, {"lr": 0.1, "opt": "a"}, {"lr": 0.01}])
    assert runs.select(None, "params.lr") == [2, 4, 0, 3, 1]
    assert runs.select(None, "params.lr DESC") == [0, 3, 2, 4, 1]
    assert runs.select(None, ["params.lr desc", "params.opt"]) == [3, 0, 2, 4, 1]
    assert runs.select(None, ["params.opt DESC", "params.lr"]) == [2, 0, 3, 1, 4]
    assert runs.select("params.lr > 0.05", ["params.opt"]) == [3, 0]
    assert runs.select(None, "params.lr", limit=0) == []
    assert runs.select(None, "params.lr", limit=2) == [2, 4]
    assert runs.select(None, None, limit=10) == [0, 1, 2, 3, 4]
    assert runs.select("params.lr > 1", "params.lr", limit=3) == []


def test_order_by_mixed_kinds():
    runs = Runs([{"b": "auto"}, {"b": 64}, {"b": True}, {"b": 32}, {}])   # the bool goes to the text column as "true"
    assert runs.select(None, "params.b") == [3, 1, 0, 2, 4]
    assert runs.select(None, "params.b desc") == [2, 0, 1, 3, 4]


@pytest.mark.parametrize("limit", [-1, 1.5, "3", True])
def test_bad_limit(limit):
    with pytest.raises((InvalidArgumentError, InvalidTypeError)) as error:
        Runs([{}]).select(None, None, limit)
    assert error.value.argument == "limit"


def test_bad_order_by():
    for items, argument, message, at in [
        ("params.lr SIDEWAYS", "order_by", "expected ASC, DESC or the end", 10),
        (["params.lr", "metrics.loss{a=b}.median"], "order_by[1]", "unknown aggregate", 18),
        (["bogus.x"], "order_by", "unknown name 'bogus'", 0),
        ("", "order_by", "expected a name", 0),
        ("params.lr ASC DESC", "order_by", "expected ASC, DESC or the end", 14),
        ("params.lr DESC, metrics.loss.min", "order_by", "give several keys as a list", 14),
    ]:
        with pytest.raises(InvalidArgumentError) as error:
            parse_order_by(items)
        text = items if isinstance(items, str) else items[-1]
        assert_points_at(error.value, argument, message, text, at)
    with pytest.raises(InvalidTypeError):
        parse_order_by(["params.lr", 3])
    with pytest.raises(InvalidTypeError):
        parse_order_by(3)


# ---------------------------------------------------------------- syntax errors

def assert_points_at(error, argument: str, message: str, text: str, at: int) -> None:
    lines = str(error).split("\n")
    assert error.argument == argument
    assert lines[0].startswith(f"{argument}: ") and message in lines[0], lines[0]
    assert lines[0].endswith(f"at position {at}:")
    assert lines[1] == "  " + re.sub(r"\s", " ", text)
    assert lines[2] == " " * (2 + at) + "^"


SYNTAX_ERRORS = [   # (text, what the message says, the text the caret points at, or "$" for the end)
    ("params.lr < and x = 1", "expected a value after '<'", "and"),
    ("params.lr <", "expected a value after '<'", "$"),
    ("params.lr < 0.1 and", "expected a name", "$"),
    ("params.lr < 0.1 and and", "unknown name 'and'", "and$"),
    ("(params.lr < 1", "unbalanced '('", "("),
    ("((params.lr < 1) or params.a = 1", "unbalanced '('", "(("),
    ("params.lr < 1)", "unbalanced ')'", ")"),
    ("(params.lr < 1 params.b = 2)", "expected AND, OR or ')'", "params.b"),
    ("params.lr < 1 params.b = 2", "expected AND, OR or the end", "params.b"),
    ("params.a = 'abc", "unterminated string", "'abc"),
    ("'abc", "not a quoted value", "'abc"),
    ("`Run Nme` = 'x'", "unknown attribute 'Run Nme'", "`Run"),
    ("'lr' < 0.1", "not a quoted value", "'lr'"),
    ('params.a = "abc', "unterminated string", '"abc'),
    ("params.`abc = 1", "unterminated string", "`abc"),
    ("params.a = 'it\\'", "unterminated string", "'it"),
    ("params.a in ()", "IN needs at least one value", ")"),
    ("params.a not in ( )", "NOT IN needs at least one value", ")"),
    ("params.a in (1, 2", "the list has no ')'", "$"),
    ("params.a in (1,)", "expected a value after ','", ")"),
    ("params.a in 1", "expected '('", "1"),
    ("foo.bar = 1", "unknown name 'foo'", "foo"),
    ("datasets.name = 'x'", "unknown name 'datasets'", "datasets"),
    ("params = 1", "expected '.' and a name after 'params'", " = 1"),
    ("attributes.artifact_uri = 'x'", "unknown attribute", "artifact_uri"),
    ("params. = 1", "expected a name after '.'", " = 1"),
    ('params."" = 1', "empty name", '""'),
    ("metrics.loss{a=b}.median < 1", "unknown aggregate", "median"),
    ("metrics.loss.min{a=b} < 1", "the aggregate goes after the context", "min{"),
    ("metrics.loss{a=b, a=c} < 1", "context key 'a' given twice", "a=c"),
    ("metrics.loss{a b} < 1", "expected '=' after the context key 'a'", "b}"),
    ("metrics.loss{a=b < 1", "expected ',' or '}'", "< 1"),
    ("metrics.loss{a=", "the context has no '}'", "$"),
    ("tags.x{a=b} = 1", "belongs to metrics only", "{"),
    ("params.a = null", "use IS NULL", "null"),
    ("params.a like 5", "LIKE needs a quoted pattern", "5"),
    ("params.a not ilike true", "NOT ILIKE needs a quoted pattern", "true"),
    ("params.a < true", "has no meaning for true", "true"),
    ("start_time > 'yesterday'", "is no ISO-8601 time", "'yesterday'"),
    ("start_time like '2024%'", "LIKE needs text", "like"),
    ("start_time = false", "is a time", "false"),
    ("params.a 5", "expected an operator", "5"),
    ("params.a", "expected an operator", "$"),
    ("params.a is 5", "expected NULL or NOT NULL", "5"),
    ("params.a not 5", "expected IN, LIKE or ILIKE after NOT", "5"),
    ("params.a = 1abc", "expected a value after '='", "1abc"),
    ("params.a = 1.2.3", "expected a value after '='", "1.2.3"),
    ("params.a = adam", "expected a value after '='", "adam"),
    ("params.a = 1 and\n\tparams.b ~ 2", "expected an operator", "~"),
]


@pytest.mark.parametrize("text, message, target", SYNTAX_ERRORS)
def test_syntax_errors_point_at_the_place(text, message, target):
    at = len(text) if target == "$" else len(text) - len(target[:-1]) if target.endswith("$") else text.index(target)
    with pytest.raises(InvalidArgumentError) as error:
        parse_filter(text)
    assert_points_at(error.value, "where", message, text, at)


def test_deep_nesting_is_an_error_not_a_crash():
    runs = Runs([{"a": 1}])
    assert runs.select("(" * 60 + "params.a = 1" + ")" * 60) == [0]
    assert runs.select("not " * 61 + "params.a = 1") == []
    text = "(" * 5000 + "params.a = 1" + ")" * 5000
    with pytest.raises(InvalidArgumentError) as error:
        parse_filter(text)
    assert "nested deeper than" in str(error.value) and error.value.argument == "where"


def test_a_long_filter_is_quoted_around_the_error():
    text = " and ".join(f"params.p{i} = {i}" for i in range(40)) + " and params.q < and " + "params.r = 1 and " * 20
    with pytest.raises(InvalidArgumentError) as error:
        parse_filter(text)
    at = text.index("< and") + 2
    first, shown, caret = str(error.value).split("\n")
    assert first.endswith(f"at position {at}:") and len(shown) < 120
    assert shown.startswith("  ...") and shown.endswith("...")
    assert shown[caret.index("^"):].startswith("and params.r = 1")


def test_the_argument_name_is_the_callers():
    with pytest.raises(InvalidArgumentError) as error:
        parse_filter("params.a <", argument="filter_string")
    assert error.value.argument == "filter_string"
    with pytest.raises(InvalidTypeError) as error:
        parse_filter(42)
    assert error.value.argument == "where"


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",))), st.sampled_from(["'", '"']))
def test_literal_decoding_round_trips_any_string(value, quote):
    literal = quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote
    runs = Runs([{"v": value}, {"v": value + "x"}])
    assert runs.select(f"params.v = {literal}") == [0]


TOKENS = ["params", "metrics", "tags", "attributes", "experiment", ".", "lr", "loss", "min", "`a b`", '"q"', "'v'",
          "'unterminated", "{", "}", "=", ",", "(", ")", "<", ">=", "!=", "and", "OR", "not", "in", "like", "is",
          "null", "true", "1", "-2.5e3", "nan", " ", "\\", "asc", "desc", "é", "/"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=14).map("".join))
def test_any_text_parses_or_raises_a_located_error(text):
    for parse, argument in ((parse_filter, "where"), (parse_order_by, "order_by")):
        try:
            parsed = parse(text)
        except InvalidArgumentError as error:
            first, shown, caret = str(error).split("\n")
            assert error.argument == argument and first.startswith(f"{argument}: ")
            at = int(re.search(r"at position (\d+):$", first).group(1))
            one_line = re.sub(r"\s", " ", text)
            assert 0 <= at <= len(text) and caret.strip() == "^"
            assert shown[len(caret) - 1:len(caret)] == one_line[at:at + 1]   # the caret sits under text[at]
            if len(text) <= 100:
                assert shown == "  " + one_line and len(caret) == 3 + at
        else:
            if parse is parse_filter:   # what parses also evaluates
                Runs([{"lr": 1}, {"lr": "x"}]).select(text)
            else:
                assert all(isinstance(key, OrderKey) for key in parsed)
