// Starts ReDoc on the document the page names, fetched with the client token that /docs keeps
// for this tab (sessionStorage), if any: the document shows what that client may call. A file
// of its own so that the page's Content-Security-Policy can forbid inline scripts.
(function () {
  "use strict";
  var holder = document.getElementById("redoc");
  var token = window.sessionStorage.getItem("civicrm-gateway-token") || "";
  var headers = token ? {Authorization: "Bearer " + token} : {};
  fetch(holder.getAttribute("data-openapi"), {headers: headers})
    .then(function (response) { return response.json(); })
    .then(function (spec) { Redoc.init(spec, {lazyRendering: true}, holder); });
})();
