from django.urls import path

from classifier import api
from suggestions.api import PhotoSuggestionView

app_name = "classifier_api"

urlpatterns = [
    path("token/", api.TokenView.as_view(), name="token"),
    path("token/logout/", api.TokenLogoutView.as_view(), name="token_logout"),
    path("tokens/", api.TokenListView.as_view(), name="token_list"),
    path("tokens/<str:token_id>/", api.TokenDetailView.as_view(), name="token_detail"),
    path("photos/", api.PhotoListCreateView.as_view(), name="photo_list"),
    path("photos/<int:photo_id>/", api.PhotoDetailView.as_view(), name="photo_detail"),
    path("photos/<int:photo_id>/suggestion/", PhotoSuggestionView.as_view(), name="photo_suggestion"),
]
