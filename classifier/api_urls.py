from django.urls import path

from classifier import api

app_name = "classifier_api"

urlpatterns = [
    path("token/", api.TokenView.as_view(), name="token"),
    path("photos/", api.PhotoListCreateView.as_view(), name="photo_list"),
    path("photos/<int:photo_id>/", api.PhotoDetailView.as_view(), name="photo_detail"),
]
