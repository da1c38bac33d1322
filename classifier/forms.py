from django import forms
from django.conf import settings

from classifier.selectors import label_choices


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """Several files under one name; the content checks happen in services.photos_create."""

    widget = MultipleFileInput

    def clean(self, data, initial=None):
        files = data if isinstance(data, (list, tuple)) else ([data] if data else [])
        files = [file for file in files if file]
        if not files:
            raise forms.ValidationError("Choose at least one photo.", code="required")
        if len(files) > settings.UPLOAD_MAX_FILES:
            raise forms.ValidationError(f"Upload at most {settings.UPLOAD_MAX_FILES} photos at once.", code="too_many_files")
        return files


class UploadForm(forms.Form):
    images = MultipleImageField(
        label="Photos",
        help_text="JPEG, PNG or WebP; one or several at once.",
        widget=MultipleFileInput(attrs={"accept": "image/jpeg,image/png,image/webp", "multiple": True}),
    )


class LabelCorrectionForm(forms.Form):
    new_label = forms.ChoiceField(label="Correct label")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["new_label"].choices = [("", "— choose a species —")] + [(label, label) for label in label_choices()]
