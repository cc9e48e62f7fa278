from django.apps import AppConfig
from django.contrib.auth import get_user_model
from django.db.models.signals import pre_save


class ServicesConfig(AppConfig):
    name = "services"

    def ready(self):
        from services.clouds import register_drivers
        from services.tokens import revoke_on_password_change

        register_drivers()
        # A signal, not a workflow: passwords change in Django's own code (admin, changepassword).
        pre_save.connect(revoke_on_password_change, sender=get_user_model(), dispatch_uid="revoke-tokens-on-password")
