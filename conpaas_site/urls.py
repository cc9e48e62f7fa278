from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("api.urls")),
    path("", include("console.urls")),
]

# A path under /api/ that matches no route is answered in JSON, as the API's other 404s are.
handler404 = "api.errors.not_found"
