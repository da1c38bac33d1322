from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from butterflysite.ratelimits import LOGIN_RATES, rate_limit

urlpatterns = [
    path("admin/", admin.site.urls),
    # Before django.contrib.auth.urls, so signing in is rate-limited per IP and per username.
    path("accounts/login/", rate_limit("login", LOGIN_RATES)(auth_views.LoginView.as_view()), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("classifier.api_urls")),
    path("", include("classifier.urls")),
]

handler400 = "butterflysite.errors.bad_request"
handler500 = "butterflysite.errors.server_error"
