/**
 * The status page's "Cluster" section (`admin/_page.ts` puts it in): the
 * nodes with their state, lease age and where their servers are parked,
 * and the pairings local against forwarded. Hidden unless the relay is a
 * node of a cluster (`cluster` in `/api/status`).
 *
 * @module
 */

/** The section's style. */
export const CLUSTER_STYLE = `
td.state-up { color: var(--ok); font-weight: 600; }
td.state-down { color: var(--bad); font-weight: 600; }
.parked-name { display: inline-block; margin: 0 10px 2px 0; }
.parked-name b { font-weight: 600; margin-left: 4px; }
`;

/** The section, hidden until `/api/status` says the relay is a node. */
export const CLUSTER_SECTION = `
  <section id="cluster" hidden>
    <h2>Cluster <span class="note" id="cluster-note"></span></h2>
    <div class="legend" id="cluster-pairings"></div>
    <table><thead><tr><th>Node</th><th>Peer address</th><th>State</th><th class="num">Lease age</th><th class="num">Servers parked</th><th>Names parked there</th></tr></thead>
    <tbody id="cluster-nodes"></tbody></table>
  </section>
`;

/** `renderCluster(status)`, with the page script's helpers (`$`, `el`, …). */
export const CLUSTER_SCRIPT = `
const CLUSTER_NAMES = 12;
function renderCluster(s) {
  const section = $("cluster"), c = s.cluster;
  section.hidden = !c;
  if (!c) return;
  $("cluster-note").textContent = "this node: " + c.node +
    (c.registered ? "" : " · Redis unreachable: routing to no other node");
  const p = c.pairings, legend = $("cluster-pairings");
  legend.replaceChildren();
  for (const [label, n, key] of [["local pairings", p.local, "local"],
      ["forwarded out", p.forwardedOut, "forwarded-out"], ["forwarded in", p.forwardedIn, "forwarded-in"]]) {
    const span = el("span", label + " ");
    span.append(el("b", count(n), "", { id: "cluster-" + key, "data-value": String(n) }));
    legend.append(span);
  }
  const body = $("cluster-nodes"); body.replaceChildren();
  for (const n of c.nodes) {
    const tr = el("tr", undefined, "", { "data-node": n.node });
    const name = el("td", n.node, "mono");
    if (n.self) name.append(el("span", "this node", "tag"));
    const age = n.leaseAgeMs === null ? "–" : (n.leaseAgeMs / 1000).toFixed(1) + " s";
    const where = el("td", undefined, "mono");
    const shown = Object.entries(n.parked).slice(0, CLUSTER_NAMES);
    for (const [parked, k] of shown) {
      const item = el("span", parked, "parked-name", { "data-name": parked, "data-value": String(k) });
      item.append(el("b", String(k)));
      where.append(item);
    }
    if (n.names > shown.length) where.append(el("span", "+" + count(n.names - shown.length) + " more", "tag"));
    if (!n.names) where.textContent = n.up ? "none" : "–";
    tr.append(name, el("td", n.addr, "mono"),
      el("td", n.up ? "up" : "down", n.up ? "state-up" : "state-down"),
      el("td", age, "num", { "data-value": String(n.leaseAgeMs) }),
      numCell(n.servers), where);
    body.append(tr);
  }
}
`;
