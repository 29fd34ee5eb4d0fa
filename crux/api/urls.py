"""Routes of the endpoints composed at the top."""

from django.urls import path

from crux.api import views

urlpatterns = [
    path("", views.ApiRootView.as_view(), name="api-root"),
    # Readiness at both paths: "/api/health/" is the one probes already use.
    path("health/", views.ReadinessView.as_view(), name="health"),
    path("health/ready", views.ReadinessView.as_view(), name="health-ready"),
    path("health/live", views.LivenessView.as_view(), name="health-live"),
    path("tasks/<str:task_id>/locate", views.TaskLocateView.as_view(), name="task-locate"),
    path("tasks/<str:task_id>/trace", views.TaskTraceView.as_view(), name="task-trace"),
]
