from django.apps import AppConfig


class WebappConfig(AppConfig):
    name = "webapp"
    verbose_name = "HybridPref"
    default_auto_field = "django.db.models.BigAutoField"
