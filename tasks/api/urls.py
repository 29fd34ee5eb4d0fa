"""Routes of the task endpoints. Paths are kept exactly as clients know them (no trailing slash); task ids
are parsed by the views, so a malformed id answers 400 naming ``task_id`` instead of an HTML 404."""

from django.urls import path

from tasks.api import legacy, views

urlpatterns = [
    path("tasks/", views.TaskListView.as_view(), name="tasks"),
    path("tasks/batch", views.TaskBatchView.as_view(), name="tasks-batch"),
    path("tasks/persistent", views.PersistentTaskListView.as_view(), name="tasks-persistent"),
    path("tasks/history/<str:task_id>", views.TaskHistoryView.as_view(), name="task-history"),
    path("tasks/outputs/<str:task_id>", views.TaskOutputsView.as_view(), name="task-outputs"),
    path("tasks/<str:task_id>", views.TaskDetailView.as_view(), name="task-detail"),
    path("tasks/<str:task_id>/cancel", views.TaskCancelView.as_view(), name="task-cancel"),
    path("tasks/<str:task_id>/restore", views.TaskRestoreView.as_view(), name="task-restore"),
    path("handlers", views.HandlerListView.as_view(), name="handlers"),
    path("v1/solve", legacy.LegacySolveView.as_view(), name="legacy-solve"),
    path("v1/jobs/<str:job_id>", legacy.LegacyJobView.as_view(), name="legacy-job"),
]
