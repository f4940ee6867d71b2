"""schemathesis hooks for `tests/api/openapi.rs`.

Two things a client knows that no schema can say:

- The tenant's agents and teams. A bulk job naming agents the platform does not know is
  refused whole (the document says so), so the generated ids of a job body are mapped
  onto the tenant's, as the Rust fuzz pass does, and the job reaches its handler.
- That a request's idempotency key is its own: one reused for another request is
  refused (the document says so), so each well-formed key is replaced by a fresh one.
- The cross-field rules the document names in a field's description (`to` after `from`,
  a window of at most N days, agents the platform knows). A schema cannot state them,
  so schemathesis generates requests that break them; a refusal of such a request is
  dropped here only when the refused field's own description names that very rule.
  Any other refusal of a schema-valid request stays a failure.

One check is answered for one route: `DELETE /v1/bulk-transitions/{job_id}` cancels a
job, which stays readable, so reading it afterwards is no use after free.

Set by the test: WFMD_SPEC (the served document, a file), WFMD_AGENTS and WFMD_TEAMS
(comma-separated).
"""

import json
import os
import re
import uuid

import schemathesis

SPEC = json.load(open(os.environ["WFMD_SPEC"], encoding="utf-8"))
AGENTS = [agent for agent in os.environ["WFMD_AGENTS"].split(",") if agent]
TEAMS = [team for team in os.environ["WFMD_TEAMS"].split(",") if team]
AGENT_ID = re.compile(r"[!-~]{1,128}")
KEY = re.compile(r"[!-~](?:[ -~]{0,253}[!-~])?")


def known(values, pool):
    """`values` with each well-formed id mapped onto one of `pool`, equal ids onto equal
    ones (so a list with repeats keeps them); unchanged when `pool` is too small."""
    mapping = {}
    mapped = []
    for value in values:
        if isinstance(value, str) and AGENT_ID.fullmatch(value) and value not in (".", ".."):
            if value not in mapping:
                if len(mapping) == len(pool):
                    return values
                mapping[value] = pool[len(mapping)]
            value = mapping[value]
        mapped.append(value)
    return mapped


def fresh_key(key):
    """A key of its own for each request that gives a well-formed one: a client does not
    reuse a key for another request (the document says it is refused)."""
    if isinstance(key, str) and KEY.fullmatch(key):
        return uuid.uuid4().hex
    return key


@schemathesis.hook
def map_case(context, case):
    body = case.body
    path = case.operation.path
    if isinstance(body, dict):
        if path.endswith("/bulk-transitions") and isinstance(body.get("agents"), list):
            body["agents"] = known(body["agents"], AGENTS)
        team = body.get("team")
        if TEAMS and isinstance(team, str) and team.strip() and len(team) <= 128:
            body["team"] = TEAMS[sum(map(ord, team)) % len(TEAMS)]
        if "idempotency_key" in body:
            body["idempotency_key"] = fresh_key(body["idempotency_key"])
    if case.headers and "idempotency-key" in case.headers:
        case.headers["idempotency-key"] = fresh_key(case.headers["idempotency-key"])
    return case


def schema_at(reference):
    node = SPEC
    for key in reference.lstrip("#/").split("/"):
        node = node[key]
    return node


def field_descriptions(schema, name, seen=None):
    """Descriptions of every property `name` reachable from `schema`."""
    seen = set() if seen is None else seen
    if isinstance(schema, list):
        for item in schema:
            yield from field_descriptions(item, name, seen)
        return
    if not isinstance(schema, dict):
        return
    reference = schema.get("$ref")
    if isinstance(reference, str):
        if reference in seen:
            return
        seen.add(reference)
        yield from field_descriptions(schema_at(reference), name, seen)
    for key, value in schema.items():
        if key == "properties" and isinstance(value, dict) and isinstance(value.get(name), dict):
            yield value[name].get("description", "")
        if isinstance(value, (dict, list)):
            yield from field_descriptions(value, name, seen)


def described(case, name):
    """What the document says of the parameter or body field `name` of `case`'s operation."""
    operation = SPEC["paths"][case.operation.path][case.operation.method.lower()]
    texts = [
        parameter.get("description", "")
        for parameter in operation.get("parameters", [])
        if parameter.get("name") == name
    ]
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body:
        texts.extend(field_descriptions(body.get("schema", {}), name))
    return " ".join(texts)


def named_rule(problem, text):
    """Whether `text` (a field's description) names the rule `problem` refuses for."""
    detail = problem.get("detail", "")
    if "unknown_agents" in problem:
        return "unknown_agents" in text
    if "has no team" in detail:
        return "does not have" in text
    kind = problem.get("type", "").removeprefix("urn:wfmd:problem:")
    if kind and f"`{kind}`" in text:
        return True
    # A window refused as longer than N days is past every documented limit of N days
    # or fewer (a day's view says 31, and the generic window check says 366 first).
    days = re.search(r"(?:at most|more than) (\d+) days", detail)
    if days:
        limits = [int(n) for n in re.findall(r"\b(\d+) days", text)]
        return any(0 < n <= int(days.group(1)) for n in limits)
    if re.search(r"must be after .?from", detail):
        return "after `from`" in text
    return False


@schemathesis.hook
def filter_failure(context, failure, case, response):
    # `DELETE /v1/bulk-transitions/{job_id}` cancels the job's remaining items (the
    # interface fixes it, and the document says so): the job stays readable, its items
    # cancelled. A read after it is no use after free.
    if failure.code == "ST301" and case.operation.path == "/v1/bulk-transitions/{job_id}":
        return False
    if failure.code != "ST202" or response.status_code not in (400, 422):
        return True
    try:
        problem = json.loads(response.content)
    except ValueError:
        return True
    name = problem.get("parameter") or problem.get("field")
    if not isinstance(name, str):
        return True
    return not named_rule(problem, described(case, name))
