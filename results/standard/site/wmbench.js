// Sorting (click a column header; again to reverse) and filtering (the selects above the table) of the
// leaderboard's rows. Plain JavaScript, no library, no network.
"use strict";
(function () {
  const table = document.getElementById("rows");
  const body = table.tBodies[0];
  const headers = Array.from(table.tHead.rows[0].cells);
  const filters = Array.from(document.querySelectorAll(".filters select"));
  const count = document.getElementById("row-count");

  function cellValue(row, index, type) {
    const text = row.cells[index].textContent.trim();
    if (type !== "number") return text;
    const value = parseFloat(text);
    return Number.isNaN(value) ? Infinity : value;  // empty cells sort last
  }

  headers.forEach(function (header, index) {
    header.addEventListener("click", function () {
      const ascending = header.getAttribute("aria-sort") !== "ascending";
      headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const type = header.dataset.type;
      const rows = Array.from(body.rows);
      rows.sort(function (a, b) {
        const x = cellValue(a, index, type), y = cellValue(b, index, type);
        const order = x < y ? -1 : x > y ? 1 : 0;
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });

  function applyFilters() {
    const wanted = filters.map(function (select) {
      return [headers.findIndex(function (h) { return h.dataset.column === select.dataset.column; }), select.value];
    });
    let shown = 0;
    Array.from(body.rows).forEach(function (row) {
      const keep = wanted.every(function (w) { return !w[1] || row.cells[w[0]].textContent.trim() === w[1]; });
      row.hidden = !keep;
      if (keep) shown += 1;
    });
    count.textContent = shown + " of " + body.rows.length + " rows";
  }
  filters.forEach(function (select) { select.addEventListener("change", applyFilters); });
  applyFilters();
})();
