"""All the routes, composed in one place: the admin, each app's API endpoints, the schema and docs, login, /metrics."""

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from crux.metrics import MetricsView

admin.site.site_header = "Crux administration"
admin.site.site_title = "Crux"
admin.site.index_title = "Tasks, history and retention"

api: list[URLPattern | URLResolver] = [
    path("", include("crux.api.urls")),
    path("", include("tasks.api.urls")),
    path("", include("persistence.api.urls")),
    path("", include("retention.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("auth/", include("rest_framework.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(api)),
    path("metrics", MetricsView.as_view(), name="metrics"),
]
