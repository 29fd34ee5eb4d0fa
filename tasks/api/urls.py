from django.urls import path

from tasks.api import views

urlpatterns = [
    path("", views.ApiRootView.as_view(), name="api-root"),
    path("tasks/<uuid:task_id>/status", views.TaskStatusView.as_view(), name="task-status"),
]
