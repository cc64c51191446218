// Starts Swagger UI on the document the page names. It lives in a file of its own so that the
// page's Content-Security-Policy can forbid inline scripts altogether.
(function () {
  "use strict";
  var holder = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: holder.getAttribute("data-openapi"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    docExpansion: "none",
    filter: true,
    displayOperationId: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null
  });
})();
