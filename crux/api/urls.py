"""Routes of the endpoints composed at the top."""

from django.urls import path

from crux.api import views

urlpatterns = [
    path("", views.ApiRootView.as_view(), name="api-root"),
    path("health/", views.HealthView.as_view(), name="health"),
    path("tasks/<str:task_id>/locate", views.TaskLocateView.as_view(), name="task-locate"),
    path("tasks/<str:task_id>/trace", views.TaskTraceView.as_view(), name="task-trace"),
]
