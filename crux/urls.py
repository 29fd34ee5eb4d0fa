"""All the routes, composed in one place: the admin, each app's API endpoints, the schema and docs, login, /metrics."""

from django.contrib import admin
from django.urls import Resolver404, URLPattern, URLResolver, include, path
from django.urls.resolvers import ResolverMatch, RoutePattern
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from crux.dashboard import dashboard_view
from crux.metrics import MetricsView
from crux.streams.views import TaskEventsRedirectView, TasksEventsRedirectView

admin.site.site_header = "Crux administration"
admin.site.site_title = "Crux"
admin.site.index_title = "Tasks, history and retention"

api: list[URLPattern | URLResolver] = [
    path("", include("crux.api.urls")),
    # Served by the stream process (crux.asgi); here, a redirect to it. Before tasks/<task_id>, which "events" fits.
    path("tasks/events", TasksEventsRedirectView.as_view(), name="tasks-events"),
    path("tasks/<str:task_id>/events", TaskEventsRedirectView.as_view(), name="task-events"),
    path("", include("tasks.api.urls")),
    path("", include("persistence.api.urls")),
    path("", include("retention.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file (?script): no inline script under our CSP.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path("auth/", include("rest_framework.urls")),
]


class EitherSlash(URLResolver):
    """Routes that answer with and without their trailing slash: a path that misses is tried in its other form.

    Django's APPEND_SLASH answers the other form with a 301 (a POST becomes a GET) or a 404 page. Here the
    resolver itself matches it, so the view answers directly; a path that matches costs nothing more, and the
    schema still names each route once, in its canonical form.
    """

    def resolve(self, path: str) -> ResolverMatch:
        try:
            return super().resolve(path)
        except Resolver404:
            other = path[:-1] if path.endswith("/") else f"{path}/"
            if other in ("", "/"):
                raise
            return super().resolve(other)


urlpatterns = [
    # The admin index's dashboard alone, which the index fetches to refresh it in place.
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="crux_dashboard"),
    path("admin/", admin.site.urls),
    path("metrics", MetricsView.as_view(), name="metrics"),
    EitherSlash(RoutePattern(""), [path("api/", include(api))]),
]

# An exception no view handled: JSON under /api/ (503 with Retry-After when the database refused), else Django's page.
handler500 = "crux.errors.server_error"
