from django import forms
from django.contrib.auth.forms import UserCreationForm


class AccountDeleteForm(forms.Form):
    password = forms.CharField(
        label="Your password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )


class SignupForm(UserCreationForm):
    """UserCreationForm with an optional email address: where a password reset link is sent."""

    email = forms.EmailField(required=False, help_text="Optional: only to send you a password reset link.")

    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")
