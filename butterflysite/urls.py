from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from butterflysite.ratelimits import LOGIN_RATES, PASSWORD_RESET_RATES, rate_limit

# Every sign-in surface shares one limit per client IP and per IP + username (butterflysite/ratelimits.py):
# the sign-in page, the admin's own sign-in page (here) and the API token endpoint (classifier/api.py).
admin.site.login = rate_limit("login", LOGIN_RATES)(admin.site.login)

sign_in = auth_views.LoginView.as_view(extra_context={"password_reset_enabled": settings.PASSWORD_RESET_ENABLED})

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", rate_limit("login", LOGIN_RATES)(sign_in), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password_change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
]
if settings.PASSWORD_RESET_ENABLED:
    # Only with an email backend configured (console in development, SMTP in production); a reset
    # link is asked for at most RATELIMIT_PASSWORD_RESET_IP times per client IP.
    urlpatterns += [
        path(
            "accounts/password_reset/",
            rate_limit("password_reset", PASSWORD_RESET_RATES)(auth_views.PasswordResetView.as_view()),
            name="password_reset",
        ),
        path("accounts/password_reset/done/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
        path("accounts/reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(), name="password_reset_confirm"),
        path("accounts/reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    ]
urlpatterns += [
    path("accounts/", include("accounts.urls")),
    path("api/", include("classifier.api_urls")),
    path("", include("classifier.urls")),
]

handler400 = "butterflysite.errors.bad_request"
handler500 = "butterflysite.errors.server_error"
