// agentledger console: our one script. Pages work without it; it adds
// keyboard navigation, the live tail, and verification in the browser.
// Loaded with `defer` under a CSP of script-src 'self': no inline code.
"use strict";

// ---- keyboard: j/k move between rows, n jumps to the next finding, / searches
(function () {
  const rows = () => Array.from(document.querySelectorAll("tr.row"));
  let current = -1;
  function select(i) {
    const all = rows();
    if (all.length === 0) return;
    current = Math.max(0, Math.min(all.length - 1, i));
    all.forEach((r) => r.classList.remove("current"));
    all[current].classList.add("current");
    all[current].scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "j") { select(current + 1); }
    else if (ev.key === "k") { select(current - 1); }
    else if (ev.key === "Enter" && current >= 0) {
      const a = rows()[current].querySelector("a[href^='/console/events/'], a");
      if (a) a.click();
    } else if (ev.key === "n") {
      const all = rows();
      for (let i = current + 1; i < all.length; i++) {
        if (all[i].classList.contains("finding")) { select(i); return; }
      }
      const next = document.getElementById("next-finding");
      if (next) next.click();
    } else if (ev.key === "/") {
      ev.preventDefault();
      const q = document.getElementById("search-q");
      if (q) q.focus(); else window.location.href = "/console/search";
    } else { return; }
  });
  // A permalink (#eSEQ) selects its row.
  if (location.hash.startsWith("#e")) {
    const target = document.getElementById(location.hash.slice(1));
    if (target) select(rows().indexOf(target));
  }
})();

// ---- live tail over Server-Sent Events, with pause
(function () {
  const body = document.getElementById("live-rows");
  if (!body) return;
  const status = document.getElementById("live-status");
  const pause = document.getElementById("live-pause");
  const form = document.getElementById("live-filters");
  let source = null;
  let paused = false;
  let held = [];
  const MAX_ROWS = 500;
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }
  function show(ev) {
    const tr = document.createElement("tr");
    tr.className = "row" + (ev.decision === "flag" || ev.decision === "deny" ? " finding" : "");
    cell(tr, ev.received_at.replace("T", " ").slice(0, 19));
    const s = cell(tr, "");
    const a = document.createElement("a");
    a.href = "/console/sessions/" + encodeURIComponent(ev.session_id) + "?at=" + ev.seq + "#e" + ev.seq;
    a.textContent = ev.session_id;
    s.appendChild(a);
    cell(tr, String(ev.seq), "n");
    cell(tr, ev.agent_id);
    cell(tr, ev.kind);
    const v = cell(tr, "");
    if (ev.decision) {
      const chip = document.createElement("span");
      chip.className = "chip " + ev.decision;
      chip.textContent = ev.decision;
      v.appendChild(chip);
    }
    body.insertBefore(tr, body.firstChild);
    while (body.children.length > MAX_ROWS) body.removeChild(body.lastChild);
  }
  function open() {
    if (source) source.close();
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
    source = new EventSource("/console/live/stream?" + params.toString());
    source.addEventListener("open", () => { status.textContent = paused ? "paused" : "live"; });
    source.addEventListener("event", (m) => {
      const ev = JSON.parse(m.data);
      if (paused) { held.push(ev); status.textContent = "paused (" + held.length + " new)"; }
      else show(ev);
    });
    source.addEventListener("lagged", (m) => {
      status.textContent = "fell behind: " + JSON.parse(m.data).missed + " events not shown (see Search)";
    });
    source.addEventListener("error", () => { status.textContent = "reconnecting…"; });
  }
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) { held.forEach(show); held = []; status.textContent = "live"; }
    else status.textContent = "paused";
  });
  form.addEventListener("submit", (e) => { e.preventDefault(); open(); });
  status.textContent = "connecting…";
  open();
})();

// ---- verification in the browser (docs/hash-chain.md), with WebCrypto
(function () {
  const form = document.getElementById("browser-verify");
  if (!form) return;
  const out = document.getElementById("browser-result");
  const enc = new TextEncoder();
  const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  const sha256 = async (text) => hex(await crypto.subtle.digest("SHA-256", enc.encode(text)));
  // RFC 8785 for the envelope's value types (strings, integers, null):
  // JSON.stringify escapes exactly as JCS does; members are sorted here.
  function jcs(obj) {
    const keys = Object.keys(obj).sort();
    return "{" + keys.map((k) => JSON.stringify(k) + ":" + JSON.stringify(obj[k])).join(",") + "}";
  }
  // The raw text of each top-level member of a line: payload, metadata,
  // verdict and session_metadata are hashed as the bytes in the line.
  function rawMembers(line) {
    const out = {};
    let i = 0;
    const ws = () => { while (" \t\r\n".includes(line[i])) i++; };
    function skipString() {
      i++;
      while (i < line.length && line[i] !== '"') i += line[i] === "\\" ? 2 : 1;
      i++;
    }
    function skipValue() {
      ws();
      const c = line[i];
      if (c === '"') { skipString(); return; }
      if (c === "{" || c === "[") {
        let depth = 0;
        while (i < line.length) {
          const d = line[i];
          if (d === '"') { skipString(); continue; }
          if (d === "{" || d === "[") depth++;
          if (d === "}" || d === "]") { depth--; if (depth === 0) { i++; return; } }
          i++;
        }
        return;
      }
      while (i < line.length && !",}".includes(line[i])) i++;
    }
    ws();
    if (line[i] !== "{") throw new Error("not a JSON object");
    i++;
    for (;;) {
      ws();
      if (line[i] === "}") break;
      const ks = i;
      skipString();
      const key = JSON.parse(line.slice(ks, i));
      ws();
      if (line[i] !== ":") throw new Error("malformed line");
      i++;
      ws();
      const vs = i;
      skipValue();
      if (key in out) throw new Error("member " + key + " given twice");
      out[key] = line.slice(vs, i).trimEnd();
      ws();
      if (line[i] === ",") i++;
    }
    return out;
  }
  // Why an erased line cannot be taken as erased, or null (as
  // scripts/verify_export.py and the server check it).
  function erasedProblem(ev, raw) {
    const e = ev.erased;
    if (raw.payload !== "null") return "an erased event still holds a payload";
    if (e === null || typeof e !== "object" || Object.keys(e).sort().join() !== "at,by,record_seq") return "member \"erased\" is not {by, at, record_seq}";
    if (typeof e.by !== "string" || typeof e.at !== "string") return "member \"erased\" has no valid by / at";
    if (!Number.isInteger(e.record_seq) || e.record_seq <= ev.seq) return "the erasure's record does not follow the erased event";
    if (ev.kind === "event_erased") return "an erasure record cannot itself be erased";
    return null;
  }
  // Why an event_erased record does not match the erased line it names, or null.
  function recordProblem(ev, pending, recorded) {
    const r = ev.payload;
    const fields = "erasedBy,erasedEventId,erasedSeq,payloadSha256,reason,usage";
    if (r === null || typeof r !== "object" || Object.keys(r).sort().join() !== fields || !Number.isInteger(r.erasedSeq)) return "the event_erased payload is not an erasure record";
    const seq = r.erasedSeq;
    if (seq >= ev.seq) return "an event_erased record names an event that does not precede it";
    if (recorded.has(seq)) return "seq " + seq + " has a second event_erased record";
    recorded.add(seq);
    const erased = pending.get(seq);
    if (erased === undefined) return "an event_erased record names seq " + seq + ", whose payload is not erased";
    pending.delete(seq);
    const e = erased.erased;
    if (r.erasedEventId !== erased.id || r.payloadSha256 !== erased.payload_sha256 || r.erasedBy !== e.by || e.at !== ev.server_ts || e.record_seq !== ev.seq) {
      return "the event_erased record does not match erased seq " + seq + " (its id, payload_sha256, who erased it, when, or where the record is)";
    }
    return null;
  }
  async function verify(text, expectedHead) {
    // The log proof line that ends an export is not an event (its proof needs the log's
    // key: `agentledger verify --log-key` checks it).
    const lines = text.split("\n").filter((l) => l.trim() !== "" && !l.startsWith('{"log_proof"'));
    let last = 0, prev = null;
    // Erased events (payload null) until the event_erased record that must
    // follow them in the chain confirms them; seqs whose record was seen.
    const pending = new Map(), recorded = new Set();
    for (let n = 0; n < lines.length; n++) {
      const line = lines[n];
      const ev = JSON.parse(line);
      const raw = rawMembers(line);
      const fail = (seq, why) => ({ ok: false, seq, why, events: n });
      if (![1, 2, 3].includes(ev.v)) return fail(ev.seq, "unsupported envelope version " + ev.v);
      if (ev.seq !== last + 1) return fail(last + 1, ev.seq > last + 1 ? "event seq " + (last + 1) + " is missing" : "seq " + ev.seq + " is out of order or repeated");
      let payloadSha;
      if (ev.erased !== undefined) {
        // The payload is gone: its digest is taken as given, and only once a
        // later event_erased record in this chain confirms it.
        const why = erasedProblem(ev, raw);
        if (why) return fail(ev.seq, why);
        pending.set(ev.seq, ev);
        payloadSha = ev.payload_sha256;
      } else {
        payloadSha = await sha256(raw.payload);
        if (payloadSha !== ev.payload_sha256) return fail(ev.seq, "payload bytes do not match payload_sha256");
        if (ev.kind === "event_erased") {
          const why = recordProblem(ev, pending, recorded);
          if (why) return fail(ev.seq, why);
        }
      }
      if ((ev.prev_hash ?? null) !== prev) return fail(ev.seq, "prev_hash does not match the previous event");
      const env = {
        v: ev.v, project: ev.project, session_id: ev.session_id, seq: ev.seq, event_id: ev.id,
        agent_id: ev.agent_id, kind: ev.kind, source_type: ev.source_type, dialect: ev.dialect,
        severity: ev.severity, client_ts: ev.client_ts ?? null, server_ts: ev.server_ts,
        payload_sha256: payloadSha, metadata_sha256: await sha256(raw.metadata), prev_hash: ev.prev_hash ?? null,
      };
      if (ev.v >= 2) {
        const verdict = raw.verdict === undefined || raw.verdict === "null" ? null : raw.verdict;
        env.verdict_sha256 = verdict === null ? null : await sha256(verdict);
      }
      if (ev.v === 2) {
        env.original_payload_sha256 = ev.original_payload_sha256 ?? null;
        env.original_metadata_sha256 = ev.original_metadata_sha256 ?? null;
      } else if (ev.v === 3) {
        env.original_payload_hmac = ev.original_payload_hmac ?? null;
        env.original_metadata_hmac = ev.original_metadata_hmac ?? null;
        env.session_sha256 = null;
        if (ev.seq === 1) {
          if (raw.session_metadata === undefined) return fail(1, "the first event of a v3 session carries the session header");
          env.session_sha256 = await sha256(jcs({
            agent_id: ev.session_agent_id, created_at: ev.session_created_at,
            metadata_sha256: await sha256(raw.session_metadata), session_id: ev.session_id,
            system_prompt: ev.session_system_prompt ?? null,
          }));
        }
      }
      const hash = await sha256(jcs(env));
      if (hash !== ev.hash) return fail(ev.seq, "hash does not match the recomputed envelope hash");
      last = ev.seq;
      prev = hash;
    }
    if (pending.size > 0) {
      const seq = Math.min(...pending.keys());
      return { ok: false, seq, why: "the payload is erased but no event_erased record in the chain names it", events: lines.length };
    }
    if (expectedHead && prev !== expectedHead) {
      return { ok: false, seq: last, why: "the chain ends at " + (prev || "nothing") + ", not at the expected head", events: lines.length };
    }
    return { ok: true, events: lines.length, head: prev };
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    out.className = "muted";
    if (!window.crypto || !crypto.subtle) {
      out.textContent = "This browser offers no WebCrypto here (it needs a secure context: HTTPS or localhost).";
      return;
    }
    out.textContent = "Downloading the export…";
    try {
      const r = await fetch(form.dataset.export, { credentials: "same-origin" });
      if (!r.ok) throw new Error("the export answered " + r.status);
      const text = await r.text();
      out.textContent = "Recomputing…";
      const expected = document.getElementById("expected-head").value.trim().toLowerCase();
      const res = await verify(text, expected);
      if (res.ok) {
        out.className = "ok";
        out.textContent = "Verified in this browser: " + res.events + " events, every digest and link recomputed; the chain ends at " + (res.head || "(empty)") + ".";
      } else {
        out.className = "bad";
        out.textContent = "Broken in this browser at seq " + res.seq + ": " + res.why + ".";
      }
      out.dataset.result = res.ok ? "valid" : "broken";
    } catch (err) {
      out.className = "bad";
      out.textContent = "Could not verify: " + err.message;
      out.dataset.result = "error";
    }
  });
})();
