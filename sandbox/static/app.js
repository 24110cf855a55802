// The sandbox page: integrations -> runs -> log records, polled once a second.
// Every value from the data goes into the DOM through textContent or an attribute, never as HTML.
"use strict";

(function () {
  const POLL_MS = 1000;
  const view = document.getElementById("view");
  const crumbs = document.getElementById("crumbs");
  const live = document.getElementById("live");
  const path = location.pathname.replace(/\/+$/, "");
  let version = "";
  let route;

  // -- small DOM helpers ------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }
  const txt = (value) => (value === null || value === undefined || value === "" ? "\u2014" : String(value));
  const when = (value) => (value ? String(value).replace("T", " ") : "\u2014");
  const slug = (value) => String(value || "none").toLowerCase().replace(/[^a-z]+/g, "-");

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "\u2014";
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h) return h + " h " + String(m).padStart(2, "0") + " min";
    if (m) return m + " min " + String(s).padStart(2, "0") + " s";
    return s + " s";
  }
  function size(bytes) {
    if (bytes === null || bytes === undefined) return "";
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1048576) return (bytes / 1024).toFixed(1) + " KB";
    return (bytes / 1048576).toFixed(1) + " MB";
  }
  function badge(kind, value) {
    return el("span", {class: "badge " + kind + "-" + slug(value), text: txt(value)});
  }
  function fileLink(file) {
    if (!file) return el("span", {class: "muted", text: "\u2014"});
    return el("a", {class: "file", href: file.url, download: file.name || "", title: size(file.size)},
              file.name || "file");
  }
  function setCrumbs(...parts) {
    crumbs.replaceChildren();
    parts.forEach((part, i) => {
      if (i) crumbs.appendChild(el("span", {class: "sep", text: "\u203a"}));
      crumbs.appendChild(part.href ? el("a", {href: part.href, text: part.text})
                                   : el("span", {text: part.text}));
    });
  }
  function table(headers, tbodyId) {
    const head = el("tr", {}, ...headers.map((h) => el("th", {text: h})));
    const tbody = el("tbody", {id: tbodyId});
    return {table: el("table", {class: "grid"}, el("thead", {}, head), tbody), tbody};
  }

  // Keyed rows: rows whose data did not change keep their DOM nodes (and so an expanded
  // description, a text selection, a focused link); new rows go in at their place.
  function syncRows(tbody, cache, items, keyOf, build, empty) {
    const seen = new Set();
    let cursor = tbody.firstChild;
    if (cursor && cursor.classList.contains("empty")) { cursor.remove(); cursor = tbody.firstChild; }
    for (const item of items) {
      const key = keyOf(item), sig = JSON.stringify(item) + (item.__extra || "");
      seen.add(key);
      let entry = cache.get(key);
      if (!entry || entry.sig !== sig) {
        const nodes = build(item);
        if (entry) {
          if (entry.nodes.includes(cursor)) cursor = entry.nodes[entry.nodes.length - 1].nextSibling;
          entry.nodes.forEach((n) => n.remove());
        }
        entry = {sig, nodes};
        cache.set(key, entry);
      }
      for (const node of entry.nodes) {
        if (node === cursor) cursor = cursor.nextSibling;
        else tbody.insertBefore(node, cursor);
      }
    }
    for (const [key, entry] of cache) {
      if (!seen.has(key)) { entry.nodes.forEach((n) => n.remove()); cache.delete(key); }
    }
    if (!items.length && !tbody.firstChild) {
      const cols = tbody.parentNode.querySelectorAll("th").length;
      tbody.appendChild(el("tr", {class: "empty"}, el("td", {colspan: cols, class: "muted", text: empty})));
    }
  }

  // -- the three views --------------------------------------------------------------------
  const integrationsView = {
    api: "/ui/api/integrations",
    setup() {
      setCrumbs({text: "Integrations"});
      const t = table(["Integration", "Key", "Enabled", "Control process", "Runs", "Last run", "Last run's status"],
                      "integrations");
      view.replaceChildren(el("h1", {text: "Integrations"}), t.table);
      this.tbody = t.tbody; this.cache = new Map();
    },
    render(data) {
      syncRows(this.tbody, this.cache, data.integrations, (i) => i.id, (i) => [
        el("tr", {"data-id": i.id, "data-key": i.key},
           el("td", {class: "name"}, el("a", {href: "/ui/integration/" + i.id, text: txt(i.name)})),
           el("td", {class: "key mono", text: i.key}),
           el("td", {class: "enabled"}, badge("flag", i.enabled ? "Yes" : "No")),
           el("td", {class: "control", text: txt(i.control_process)}),
           el("td", {class: "runs num", text: i.runs}),
           el("td", {class: "last-run"}, i.last_run_id
              ? el("a", {href: "/ui/run/" + i.last_run_id, text: when(i.last_run)}) : when(i.last_run)),
           el("td", {class: "last-status"}, i.last_status ? badge("status", i.last_status) : "\u2014")),
      ], "No integrations.");
    },
  };

  const integrationView = {
    setup(id) {
      this.api = "/ui/api/integration/" + id;
      setCrumbs({text: "Integrations", href: "/"}, {text: "Integration " + id});
      this.title = el("h1", {text: "Integration"});
      this.meta = el("dl", {class: "meta"});
      const t = table(["Run", "Status", "Start", "Finish", "Duration", "File"], "runs");
      view.replaceChildren(this.title, this.meta, el("h2", {text: "Runs (newest first)"}), t.table);
      this.tbody = t.tbody; this.cache = new Map();
    },
    render(data) {
      const i = data.integration;
      this.title.textContent = txt(i.name);
      document.title = txt(i.name) + " \u2013 OneVizion sandbox";
      setCrumbs({text: "Integrations", href: "/"}, {text: txt(i.name)});
      this.meta.replaceChildren(...meta([["Key", i.key], ["Enabled", i.enabled ? "Yes" : "No"],
                                         ["Control process", i.control_process], ["Description", i.description]]));
      syncRows(this.tbody, this.cache, data.runs, (r) => r.id, (r) => [
        el("tr", {"data-id": r.id, "data-key": r.key, class: "run"},
           el("td", {class: "key mono"}, el("a", {href: "/ui/run/" + r.id, text: r.key})),
           el("td", {class: "status"}, badge("status", r.status)),
           el("td", {class: "start", text: when(r.start)}),
           el("td", {class: "finish", text: when(r.finish)}),
           el("td", {class: "duration num", text: duration(r.duration)}),
           el("td", {class: "file"}, fileLink(r.file))),
      ], "No runs yet.");
    },
  };

  const runView = {
    setup(id) {
      this.api = "/ui/api/run/" + id;
      this.expanded = new Map();   // log id -> description text (or null while loading)
      setCrumbs({text: "Integrations", href: "/"}, {text: "Run " + id});
      this.title = el("h1", {text: "Run"});
      this.meta = el("dl", {class: "meta"});
      this.count = el("span", {class: "muted count"});
      const t = table(["Log ID", "Date time", "Type", "Message", "File"], "logs");
      view.replaceChildren(this.title, this.meta, el("h2", {}, "Log records ", this.count), t.table);
      this.tbody = t.tbody; this.cache = new Map();
    },
    render(data) {
      const r = data.run, i = data.integration;
      this.last = data;
      this.title.replaceChildren(el("span", {text: txt(i.name)}), el("span", {class: "sep", text: " \u203a "}),
                                 el("span", {class: "mono", text: r.key}));
      document.title = r.key + " \u2013 OneVizion sandbox";
      setCrumbs({text: "Integrations", href: "/"}, {text: txt(i.name), href: "/ui/integration/" + i.id},
                {text: r.key});
      this.meta.replaceChildren(...meta([["Status", badge("status", r.status)], ["Start", when(r.start)],
                                         ["Finish", when(r.finish)], ["Duration", duration(r.duration)],
                                         ["File", fileLink(r.file)]]));
      this.meta.setAttribute("data-status", r.status || "");
      this.count.textContent = "(" + data.logs.length + ")";
      const logs = data.logs.map((l) => Object.assign({}, l, {
        __extra: this.expanded.has(l.id) ? "open:" + (this.expanded.get(l.id) === null ? "loading" : "loaded") : ""}));
      syncRows(this.tbody, this.cache, logs, (l) => l.id, (l) => this.logRows(l), "No log records yet.");
    },
    logRows(l) {
      const open = this.expanded.has(l.id);
      const message = el("td", {class: "message"}, el("span", {class: "text", text: l.message}));
      if (l.description_chars) {
        const label = (open ? "hide" : "show") + " description (" + l.description_lines + " line" +
                      (l.description_lines === 1 ? "" : "s") + ", " + l.description_chars + " chars)";
        message.appendChild(el("button", {type: "button", class: "toggle", "aria-expanded": open ? "true" : "false",
                                          text: label, onclick: () => this.toggle(l.id)}));
      }
      const row = el("tr", {"data-id": l.id, "data-key": l.key, class: "log log-" + slug(l.type)},
                     el("td", {class: "key mono", text: l.key}),
                     el("td", {class: "time mono", text: when(l.time)}),
                     el("td", {class: "type"}, badge("type", l.type)),
                     message,
                     el("td", {class: "file"}, l.file ? fileLink(l.file) : ""));
      if (!open) return [row];
      const text = this.expanded.get(l.id);
      const pre = el("pre", {class: "description", text: text === null ? "Loading\u2026" : txt(text)});
      return [row, el("tr", {class: "description-row", "data-for": l.id}, el("td", {colspan: 5}, pre))];
    },
    toggle(id) {
      if (this.expanded.has(id)) {
        this.expanded.delete(id);
        this.render(this.last);
        return;
      }
      this.expanded.set(id, null);
      this.render(this.last);
      fetch("/ui/api/log/" + id, {cache: "no-store"})
        .then((response) => response.ok ? response.json() : Promise.reject(new Error(response.status)))
        .then((log) => log.description, (error) => "Could not load the description: " + error.message)
        .then((text) => {
          if (!this.expanded.has(id)) return;
          this.expanded.set(id, text === null || text === undefined ? "" : text);
          this.render(this.last);
        });
    },
  };

  function meta(pairs) {
    const nodes = [];
    for (const [name, value] of pairs) {
      nodes.push(el("dt", {text: name}));
      nodes.push(value instanceof Node ? el("dd", {}, value) : el("dd", {text: txt(value)}));
    }
    return nodes;
  }

  // -- routing and polling ----------------------------------------------------------------
  let match;
  if ((match = path.match(/^\/ui\/integration\/(\d+)$/))) { route = integrationView; route.setup(match[1]); }
  else if ((match = path.match(/^\/ui\/run\/(\d+)$/))) { route = runView; route.setup(match[1]); }
  else { route = integrationsView; route.setup(); }

  function showError(message) {
    view.replaceChildren(el("p", {class: "error", text: message}), el("p", {}, el("a", {href: "/", text: "All integrations"})));
  }

  async function poll() {
    try {
      const response = await fetch(route.api + "?v=" + encodeURIComponent(version), {cache: "no-store"});
      if (response.status === 404) { showError(await response.text()); live.className = "live off"; return; }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const data = await response.json();
      live.className = "live on"; live.textContent = "live";
      if (!data.same) { version = data.version; route.render(data); }
    } catch (error) {
      live.className = "live off"; live.textContent = "sandbox unreachable";
    }
    window.__hubPolls = (window.__hubPolls || 0) + 1;
    setTimeout(poll, POLL_MS);
  }
  poll();
})();
