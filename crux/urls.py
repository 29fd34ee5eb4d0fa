"""Top-level URLs: the admin, the API with its schema and docs, DRF's session login, and /metrics."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from crux.metrics import MetricsView

admin.site.site_header = "Crux administration"
admin.site.site_title = "Crux"
admin.site.index_title = "Tasks, history and retention"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("tasks.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/auth/", include("rest_framework.urls")),
    path("metrics", MetricsView.as_view(), name="metrics"),
]
