// Come back to the page that was asked for (a deep link) once signed in.
document.getElementById("next").value = location.pathname;
