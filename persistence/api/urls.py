"""Routes of the persistence endpoints."""

from django.urls import path

from persistence.api import views

urlpatterns = [
    path("tasks/<str:task_id>/status", views.TaskStatusView.as_view(), name="task-status"),
    path("tasks/<str:task_id>/recover", views.TaskRecoverView.as_view(), name="task-recover"),
    path("persistence/stats", views.PersistenceStatsView.as_view(), name="persistence-stats"),
]
