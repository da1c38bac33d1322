from django.urls import path

from classifier import views, views_species
from suggestions import views as suggestion_views

app_name = "classifier"

urlpatterns = [
    path("", views.gallery, name="gallery"),
    path("upload/", views.upload, name="upload"),
    path("accounts/signup/", views.signup, name="signup"),
    path("photos/<int:photo_id>/", views.photo_detail, name="photo_detail"),
    path("photos/<int:photo_id>/result/", views.photo_result, name="photo_result"),
    path("photos/<int:photo_id>/card/", views.photo_card, name="photo_card"),
    path("photos/<int:photo_id>/retry/", views.photo_retry, name="photo_retry"),
    path("photos/<int:photo_id>/suggestion/", suggestion_views.suggestion_create, name="photo_suggestion"),
    path("species/", views_species.species_list, name="species_list"),
    path("species/<slug:slug>/", views_species.species_detail, name="species_detail"),
    path("photos/<int:photo_id>/delete/", views.photo_delete, name="photo_delete"),
    path("photos/<int:photo_id>/<str:kind>.jpg", views.photo_file, name="photo_file"),
]
