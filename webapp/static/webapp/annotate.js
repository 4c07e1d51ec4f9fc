// Annotation workspace: keyboard shortcuts, ranking by drag and drop or keys, active-time tracking.
// Works on the page as served and again after each htmx swap of #workspace.
(function () {
  "use strict";

  // Active time: counts only while the tab is visible.
  const timer = { assignment: null, active: 0, since: null };
  function startTimer(assignmentId, already) {
    if (timer.assignment !== assignmentId) {
      timer.assignment = assignmentId;
      timer.active = already || 0;
      timer.since = document.hidden ? null : performance.now();
    }
  }
  function activeSeconds() {
    const running = timer.since === null ? 0 : (performance.now() - timer.since) / 1000;
    return timer.active + running;
  }
  document.addEventListener("visibilitychange", function () {
    if (document.hidden && timer.since !== null) {
      timer.active += (performance.now() - timer.since) / 1000;
      timer.since = null;
    } else if (!document.hidden && timer.since === null) {
      timer.since = performance.now();
    }
  });

  function workspace() { return document.getElementById("workspace"); }
  function form() { return document.getElementById("annotation-form"); }
  function aspects() { return Array.from(document.querySelectorAll("#annotation-form fieldset.aspect")); }

  function currentAspect() {
    const active = document.activeElement;
    const inside = active && active.closest ? active.closest("fieldset.aspect") : null;
    if (inside) return inside;
    return aspects().find(function (f) { return !f.querySelector("input:checked"); }) || null;
  }

  function answer(fieldset, key) {
    const input = fieldset.querySelector('input[type=radio][data-key="' + key + '"]');
    if (!input) return false;
    input.checked = true;
    const list = aspects();
    const next = list[list.indexOf(fieldset) + 1];
    // Move on to the next question, as a keyboard user expects after answering.
    const target = next ? (next.querySelector("input:checked") || next.querySelector("input[type=radio]")) : document.getElementById("justification");
    if (target) target.focus(); else input.focus();
    return true;
  }

  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && !["radio", "checkbox"].includes(el.type)) || el.isContentEditable);
  }

  function openSkip() {
    const skip = document.getElementById("skip-form");
    if (!skip) return;
    skip.hidden = false;
    skip.querySelector("input[name=skip_reason]").focus();
  }

  document.addEventListener("keydown", function (event) {
    if (!form()) return;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      const skip = document.activeElement && document.activeElement.closest ? document.activeElement.closest("#skip-form") : null;
      if (skip) { skip.requestSubmit(); return; }
      syncRanking();
      form().requestSubmit();
      return;
    }
    if (event.altKey && (event.key === "s" || event.key === "S" || event.code === "KeyS")) {
      event.preventDefault();
      openSkip();
      return;
    }
    if (typing(document.activeElement) || event.ctrlKey || event.altKey || event.metaKey) return;
    if (/^[1-9]$/.test(event.key)) {
      const fieldset = currentAspect();
      if (fieldset && answer(fieldset, event.key)) event.preventDefault();
    }
  });

  // Ranking: the list's order (and tie marks) is the answer; kept in the hidden input as JSON.
  function rankingList() { return document.getElementById("ranking-list"); }
  function syncRanking() {
    const list = rankingList();
    if (!list) return;
    const groups = [];
    Array.from(list.children).forEach(function (li, position) {
      const index = Number(li.dataset.index);
      if (li.classList.contains("tied") && groups.length) {
        const last = groups[groups.length - 1];
        groups[groups.length - 1] = Array.isArray(last) ? last.concat([index]) : [last, index];
      } else {
        groups.push(index);
      }
      const rank = li.querySelector("input[type=number]");
      if (rank) rank.value = li.classList.contains("tied") && position > 0 ? list.children[position - 1].querySelector("input[type=number]").value : String(groups.length);
    });
    document.getElementById("ranking-input").value = JSON.stringify(groups);
  }
  function restoreRanking() {
    const list = rankingList();
    const input = document.getElementById("ranking-input");
    if (!list || !input || !input.value) return;
    let groups;
    try { groups = JSON.parse(input.value); } catch (e) { return; }
    if (!Array.isArray(groups)) return;
    groups.forEach(function (group) {
      const members = Array.isArray(group) ? group : [group];
      members.forEach(function (index, k) {
        const li = list.querySelector('li[data-index="' + index + '"]');
        if (!li) return;
        li.classList.toggle("tied", k > 0);
        list.appendChild(li);
      });
    });
  }
  function setupRanking() {
    const list = rankingList();
    if (!list || list.dataset.ready) return;
    list.dataset.ready = "1";
    list.classList.add("js");
    const allowTies = list.dataset.allowTies === "1";
    restoreRanking();
    let dragged = null;
    list.addEventListener("dragstart", function (e) {
      dragged = e.target.closest("li");
      if (!dragged) return;
      dragged.classList.add("dragging");
      e.dataTransfer.effectAllowed = "move";
      e.dataTransfer.setData("text/plain", dragged.dataset.index);
    });
    list.addEventListener("dragover", function (e) {
      e.preventDefault();
      const over = e.target.closest("li");
      if (!dragged || !over || over === dragged) return;
      const box = over.getBoundingClientRect();
      list.insertBefore(dragged, e.clientY < box.top + box.height / 2 ? over : over.nextSibling);
    });
    list.addEventListener("drop", function (e) { e.preventDefault(); });
    list.addEventListener("dragend", function () {
      if (dragged) dragged.classList.remove("dragging");
      dragged = null;
      syncRanking();
    });
    list.addEventListener("keydown", function (e) {
      const li = e.target.closest("li");
      if (!li) return;
      if (e.altKey && e.key === "ArrowUp" && li.previousElementSibling) {
        list.insertBefore(li, li.previousElementSibling);
      } else if (e.altKey && e.key === "ArrowDown" && li.nextElementSibling) {
        list.insertBefore(li.nextElementSibling, li);
      } else if (!e.altKey && e.key === "ArrowUp" && li.previousElementSibling) {
        li.previousElementSibling.focus(); e.preventDefault(); return;
      } else if (!e.altKey && e.key === "ArrowDown" && li.nextElementSibling) {
        li.nextElementSibling.focus(); e.preventDefault(); return;
      } else if (allowTies && (e.key === "t" || e.key === "T") && li.previousElementSibling) {
        li.classList.toggle("tied");
      } else {
        return;
      }
      e.preventDefault();
      li.focus();
      syncRanking();
    });
    syncRanking();
  }

  function setup() {
    const ws = workspace();
    if (!ws || !form()) return;
    const seconds = Number((form().querySelector("input[name=active_seconds]") || {}).value) || 0;
    startTimer(ws.dataset.assignment, seconds);
    setupRanking();
    const skipButton = document.getElementById("skip-open");
    if (skipButton && !skipButton.dataset.ready) {
      skipButton.dataset.ready = "1";
      skipButton.addEventListener("click", openSkip);
    }
    if (!form().dataset.ready) {
      form().dataset.ready = "1";
      form().addEventListener("submit", function () {
        syncRanking();
        form().querySelector("input[name=active_seconds]").value = activeSeconds().toFixed(1);
      });
      // htmx reads the form's values before the submit event's handlers run on some paths: sync early.
      form().addEventListener("htmx:configRequest", function (e) {
        syncRanking();
        e.detail.parameters["active_seconds"] = activeSeconds().toFixed(1);
        const ranking = document.getElementById("ranking-input");
        if (ranking) e.detail.parameters["ranking"] = ranking.value;
      });
    }
    const invalid = ws.querySelector(".invalid input, textarea.invalid, .invalid");
    const first = invalid ? (invalid.matches("input, textarea") ? invalid : invalid.querySelector("input, textarea, li")) : aspects()[0] && aspects()[0].querySelector("input");
    if (first && !ws.dataset.focused) {
      ws.dataset.focused = "1";
      first.focus();
    }
  }

  // A submit the server could not save (a 5xx: htmx swaps nothing) or that never reached it: say so in the
  // workspace's status line and leave the form, with the annotator's answers, as it is, ready to submit again.
  const NOT_SAVED = "Your answer was NOT saved: the server could not be reached. Your answers are still in the form: please submit again in a few seconds.";
  function showStatus(text) {
    const ws = workspace();
    if (!ws) return;
    let status = ws.querySelector("p.notice[role=status]");
    if (!status) {
      status = document.createElement("p");
      status.setAttribute("role", "status");
      const head = ws.querySelector(".workspace-head");
      if (head) head.after(status); else ws.prepend(status);
    }
    status.className = "notice warn";
    status.textContent = text;
  }
  function serverMessage(xhr) {
    const type = (xhr && xhr.getResponseHeader("Content-Type")) || "";
    if (!xhr || !xhr.responseText || type.indexOf("text/html") === -1) return "";
    const doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
    const note = doc.querySelector("[role=status]");
    return note ? note.textContent.trim() : "";
  }
  document.addEventListener("htmx:responseError", function (event) {
    if (!workspace()) return;
    const xhr = event.detail.xhr;
    const status = xhr ? xhr.status : 0;
    const message = serverMessage(xhr) ||
      (status >= 500 ? NOT_SAVED.replace("could not be reached", "had a problem (HTTP " + status + ")") : "");
    if (message) showStatus(message);
  });
  document.addEventListener("htmx:sendError", function () {
    if (workspace()) showStatus(NOT_SAVED);
  });

  document.addEventListener("DOMContentLoaded", setup);
  document.addEventListener("htmx:afterSettle", setup);
})();
