"""Routes of the retention endpoints."""

from django.urls import path

from retention.api import views

urlpatterns = [
    path("purge", views.PurgeView.as_view(), name="purge"),
]
