"""Top-level URLs: the admin, the API and its schema."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

admin.site.site_header = "Crux administration"
admin.site.site_title = "Crux"
admin.site.index_title = "Tasks, history and retention"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("tasks.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]
