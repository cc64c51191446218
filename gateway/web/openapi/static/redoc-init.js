// Starts ReDoc one entity at a time, like /docs: a site with 150 entities would otherwise
// render its whole document (minutes). The page lists the entities (/openapi/index.json) in a
// selector, opens Contact (or the first), and ?entity=Name opens another; "Gateway routes" and
// "Everything" are there too. Documents are fetched with the client token that /docs keeps for
// this tab (sessionStorage), if any: they show what that client may call. A file of its own so
// that the page's Content-Security-Policy can forbid inline scripts.
(function () {
  "use strict";
  var holder = document.getElementById("redoc");
  var token = window.sessionStorage.getItem("civicrm-gateway-token") || "";
  var headers = token ? {Authorization: "Bearer " + token} : {};

  function json(url) {
    return fetch(url, {headers: headers}).then(function (response) {
      return response.ok ? response.json() : null;
    });
  }

  function show(url) {
    json(url).then(function (spec) {
      if (spec) { Redoc.init(spec, {lazyRendering: true}, holder); }
    });
  }

  function selector(choices, primary) {
    var bar = document.createElement("div");
    bar.className = "cgw-documents";
    bar.style.cssText = "padding:8px 20px;font-family:sans-serif;border-bottom:1px solid #ddd";
    var label = document.createElement("label");
    label.textContent = "Document: ";
    var select = document.createElement("select");
    select.id = "cgw-document";
    choices.forEach(function (choice) {
      var option = document.createElement("option");
      option.value = choice[0];
      option.textContent = choice[1];
      option.selected = choice[0] === primary;
      if (choice[2]) { option.setAttribute("data-entity", choice[2]); }
      select.appendChild(option);
    });
    select.addEventListener("change", function () {
      var name = select.options[select.selectedIndex].getAttribute("data-entity");
      if (name && window.history.replaceState) {
        window.history.replaceState(null, "", "?entity=" + encodeURIComponent(name));
      }
      show(select.value);
    });
    label.appendChild(select);
    bar.appendChild(label);
    holder.parentNode.insertBefore(bar, holder);
  }

  json(holder.getAttribute("data-index")).catch(function () { return null; }).then(function (index) {
    if (!index) {
      show(holder.getAttribute("data-openapi"));
      return;
    }
    var wanted = new URLSearchParams(window.location.search).get("entity") || "Contact";
    var first = index.entities.filter(function (e) { return e.name === wanted; })[0] ||
      index.entities.filter(function (e) { return e.name === "Contact"; })[0] || index.entities[0];
    var url = first ? first.url : index.generic;
    var choices = index.entities.map(function (e) { return [e.url, e.name, e.name]; });
    choices.push([index.generic, "Gateway routes (generic, batch, service)"]);
    choices.push([index.all, "Everything in one document (slow on a large site)"]);
    selector(choices, url);
    show(url);
  });
})();
