// The credit leaderboard: fetched once, then refreshed by the monitor's "credit" events.
// Self-contained: renders into the element with id "credit"; uses the page's Socket.IO
// connection (global `socket`) when there is one.
"use strict";
(function () {
  const root = document.getElementById("credit");
  if (!root) return;

  function cell(tag, text, cls) {
    const node = document.createElement(tag);
    node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }
  function number(x, digits) {
    return Number(x).toLocaleString(undefined, {minimumFractionDigits: digits, maximumFractionDigits: digits});
  }

  function render(board) {
    const table = cell("table", "");
    table.id = "credit-table";
    const head = table.createTHead().insertRow();
    for (const h of ["#", "volunteer", "credit", "verified chunks", "RAC / day", "reversals"]) head.appendChild(cell("th", h));
    const body = table.createTBody();
    (board.top || []).forEach((row, i) => {
      const tr = body.insertRow();
      tr.dataset.volunteer = row.volunteer;
      tr.appendChild(cell("td", String(i + 1)));
      tr.appendChild(cell("td", row.volunteer));
      tr.appendChild(cell("td", number(row.credit, 3), "num"));
      tr.appendChild(cell("td", String(row.chunks), "num"));
      tr.appendChild(cell("td", number(row.rac, 2), "num"));
      tr.appendChild(cell("td", String(row.reversals), row.reversals ? "num reversed" : "num"));
    });
    const note = cell("p", "", "muted");
    if (!board.top || !board.top.length) note.textContent = "No credit granted yet: credit comes only with verified results.";
    else if (board.head) note.textContent = board.volunteers + " volunteers, " + number(board.total_credit, 3) +
      " credits; ledger of " + board.head.size + " entries, signed root " + board.head.root.slice(0, 16) + "…";
    const title = cell("h2", "Credit ");
    title.appendChild(cell("span", "for verified work only", "muted"));
    const scroll = cell("div", "");
    scroll.className = "scroll";  // wide tables scroll on a phone instead of widening the page
    scroll.appendChild(table);
    root.replaceChildren(title, scroll, note);
  }

  render({top: []});
  fetch("api/credit").then(r => r.ok ? r.json() : null).then(b => { if (b) render(b); }).catch(() => {});
  if (typeof socket !== "undefined" && socket) socket.on("credit", render);
})();
