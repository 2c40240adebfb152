// Come back to the page that was asked for (a deep link) once signed in; after a wrong
// token the server already filled it in.
if (location.pathname !== "/admin/login") {
  document.getElementById("next").value = location.pathname;
}
