"""API routes. Seed 004 paths are kept exactly (no trailing slash); task ids are parsed by the
views, so a malformed id answers 400 naming ``task_id`` instead of an HTML 404."""

from django.urls import path

from tasks.api import views

urlpatterns = [
    path("", views.ApiRootView.as_view(), name="api-root"),
    path("health/", views.HealthView.as_view(), name="health"),
    path("tasks/", views.TaskListView.as_view(), name="tasks"),
    path("tasks/persistent", views.PersistentTaskListView.as_view(), name="tasks-persistent"),
    path("tasks/history/<str:task_id>", views.TaskHistoryView.as_view(), name="task-history"),
    path("tasks/outputs/<str:task_id>", views.TaskOutputsView.as_view(), name="task-outputs"),
    path("tasks/<str:task_id>", views.TaskDetailView.as_view(), name="task-detail"),
    path("tasks/<str:task_id>/status", views.TaskStatusView.as_view(), name="task-status"),
    path("tasks/<str:task_id>/cancel", views.TaskCancelView.as_view(), name="task-cancel"),
    path("tasks/<str:task_id>/restore", views.TaskRestoreView.as_view(), name="task-restore"),
    path("tasks/<str:task_id>/recover", views.TaskRecoverView.as_view(), name="task-recover"),
    path("tasks/<str:task_id>/trace", views.TaskTraceView.as_view(), name="task-trace"),
    path("purge", views.PurgeView.as_view(), name="purge"),
    path("persistence/stats", views.PersistenceStatsView.as_view(), name="persistence-stats"),
    path("v1/solve", views.LegacySolveView.as_view(), name="legacy-solve"),
    path("v1/jobs/<str:job_id>", views.LegacyJobView.as_view(), name="legacy-job"),
]
