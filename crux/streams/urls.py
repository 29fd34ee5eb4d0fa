"""Routes of the stream process (``crux.asgi``): the two event streams, nothing else."""

from django.urls import path

from crux.streams import views

urlpatterns = [
    path("api/tasks/events", views.tasks_events, name="stream-tasks-events"),
    path("api/tasks/<str:task_id>/events", views.task_events, name="stream-task-events"),
]
