from django.contrib import admin

from webapp.models import AnnotatorProfile, ApiToken, Item, Judge, Membership, Project

admin.site.register(Project)
admin.site.register(Membership)
admin.site.register(AnnotatorProfile)
admin.site.register(Judge)


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["external_id", "project", "route", "status"]
    list_filter = ["project", "route", "status"]
    search_fields = ["external_id"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    # The clear token is shown once by create_api_token; here only its prefix, and revocation.
    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "revoked"]
    list_filter = ["revoked"]
    fields = ["user", "name", "prefix", "created_at", "last_used_at", "revoked"]
    readonly_fields = ["user", "name", "prefix", "created_at", "last_used_at"]

    def has_add_permission(self, request: object) -> bool:
        return False
